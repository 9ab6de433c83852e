"""Patients cannot forge Rasa commands.

Rasa reads any message that starts with "/" as a command: ``/restart``, or an intent
with entities such as ``/inform{"appointment_option": "1"}``. Only the assistant's
own buttons may send those. A channel passes what a patient sent through
:func:`guard_text`: a payload this conversation was offered goes through unchanged;
any other text loses its leading slashes and is read as plain words.
(``clinic_nlu.text.clean_text`` also makes sure Unicode normalisation cannot turn a
look-alike, such as a full-width slash, into a command.)
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from channels.store import ChannelStore

COMMAND_PREFIX = "/"


def as_plain_text(text: str) -> str:
    """``text`` without leading slashes, so Rasa cannot read it as a command."""
    stripped = text.strip()
    while stripped.startswith(COMMAND_PREFIX):
        stripped = stripped[len(COMMAND_PREFIX) :].lstrip()
    return stripped


def guard_text(store: ChannelStore, channel: str, sender: str, text: str) -> str:
    """The text to hand to Rasa: an offered payload as is, anything else as words."""
    stripped = text.strip()
    if not stripped.startswith(COMMAND_PREFIX):
        return text
    if store.was_offered(channel, sender, stripped):
        return stripped
    return as_plain_text(stripped)


def buttons_of(message: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(title, payload) of each button of one outgoing bot message."""
    return [
        (str(button.get("title", "")), str(button.get("payload", "")))
        for button in message.get("buttons") or []
        if button.get("payload")
    ]


def remember_buttons(
    store: ChannelStore, channel: str, sender: str, messages: Iterable[Dict[str, Any]]
) -> None:
    """Records the buttons of the bot's reply, the last list being the latest."""
    for message in messages:
        choices = buttons_of(message)
        if choices:
            store.remember_offers(channel, sender, choices)
