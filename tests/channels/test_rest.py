"""The REST channel's turn: a patient always gets an answer, never silence."""

from __future__ import annotations

from typing import Any, List

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.lock_store import LockError

from channels import FAILURE_NOTE
from channels.rest import answer

SENDER = "rest-patient"


async def replies_to(on_new_message: Any) -> List[Any]:
    collector = CollectingOutputChannel()
    message = UserMessage("what is a back spasm", collector, SENDER)
    return await answer(on_new_message, message, collector)


async def test_rasas_replies_are_passed_on_as_they_are() -> None:
    async def rasa(message: UserMessage) -> None:
        await message.output_channel.send_text_message(SENDER, "A spasm is ...")

    answer_text = {"recipient_id": SENDER, "text": "A spasm is ..."}
    assert await replies_to(rasa) == [answer_text]


async def test_a_turn_that_answers_nothing_is_not_given_a_note() -> None:
    async def rasa(message: UserMessage) -> None:
        return None

    assert await replies_to(rasa) == []


@pytest.mark.parametrize(
    "error",
    [LockError("waited too long"), RuntimeError("the action server broke")],
    ids=["lock wait ran out", "turn failed"],
)
async def test_a_failed_turn_asks_the_patient_to_send_it_again(
    error: Exception,
) -> None:
    async def rasa(message: UserMessage) -> None:
        raise error

    assert await replies_to(rasa) == [{"recipient_id": SENDER, "text": FAILURE_NOTE}]


async def test_a_turn_that_failed_after_speaking_keeps_what_it_said() -> None:
    async def rasa(message: UserMessage) -> None:
        await message.output_channel.send_text_message(SENDER, "Call 911.")
        raise RuntimeError("later step failed")

    assert await replies_to(rasa) == [{"recipient_id": SENDER, "text": "Call 911."}]
