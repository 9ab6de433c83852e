"""The REST channel (``POST /webhooks/rest/webhook``), strict about its input.

Rasa's own ``RestInput`` answers a body that is not a JSON object with a 500 and
logs the patient's text when a message fails. This one checks the request first and
answers 400 with a short reason, never logs message text, passes the text
through ``channels.guard`` so only offered buttons can send Rasa commands, and
answers a sender over its rate limit itself (``channels.rate_limit``).
"""

from __future__ import annotations

import json
import logging
from asyncio import CancelledError
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels import FAILURE_NOTE
from channels.guard import guard_text, remember_buttons
from channels.rate_limit import RateLimits, domain_of, replies_over_limit
from channels.store import ChannelStore, OpensStoreLazily

logger = logging.getLogger(__name__)

MAX_SENDER_LENGTH = 128
# TextCleaner reads the first 1,000 characters; this only refuses absurd bodies.
MAX_MESSAGE_LENGTH = 100_000


def bad_request(reason: str) -> HTTPResponse:
    """A 400 with a short, patient-data-free reason."""
    return response.json({"error": reason}, status=400)


def parse_body(request: Request) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The JSON object of the request, or the reason it is not acceptable."""
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return None, "The body must be JSON."
    if not isinstance(body, dict):
        return None, "The body must be a JSON object."
    sender, message = body.get("sender"), body.get("message")
    if not isinstance(sender, str) or not sender.strip():
        return None, "'sender' must be a non-empty string."
    if len(sender) > MAX_SENDER_LENGTH:
        return None, f"'sender' is longer than {MAX_SENDER_LENGTH} characters."
    if not isinstance(message, str):
        return None, "'message' must be a string."
    if len(message) > MAX_MESSAGE_LENGTH:
        return None, f"'message' is longer than {MAX_MESSAGE_LENGTH} characters."
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return None, "'metadata' must be a JSON object."
    return body, None


async def answer(
    on_new_message: Callable[[UserMessage], Awaitable[Any]],
    message: UserMessage,
    collector: CollectingOutputChannel,
) -> List[Dict[str, Any]]:
    """Rasa's replies to ``message``, or :data:`channels.FAILURE_NOTE` when it failed.

    A turn that fails (an error, a timeout, or Rasa's ``LockError`` after waiting too
    long behind the conversation's earlier messages) before saying anything gets the
    note, so the patient knows to send the message again; it is never silence.
    """
    try:
        await on_new_message(message)
    except CancelledError:
        logger.error("A REST message timed out.")
    except Exception:  # noqa: BLE001 - the patient still gets an answer
        logger.exception("A REST message failed.")
    else:
        return list(collector.messages)
    if collector.messages:
        return list(collector.messages)
    return [{"recipient_id": message.sender_id, "text": FAILURE_NOTE}]


class GuardedRestInput(OpensStoreLazily, RestInput):
    """REST input that validates requests and guards command payloads."""

    def __init__(
        self, store: Optional[ChannelStore] = None, limits: Optional[RateLimits] = None
    ) -> None:
        """Creates the channel; the store is opened on first use."""
        self._store = store
        self.limits = limits or RateLimits.from_settings()

    @classmethod
    def name(cls) -> str:
        """Keeps Rasa's URL: ``/webhooks/rest/webhook``."""
        return "rest"

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        """The health and webhook routes."""
        webhook = Blueprint("guarded_rest_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            body, problem = parse_body(request)
            if body is None:
                return bad_request(problem or "Bad request.")
            sender = body["sender"].strip()
            verdict = self.limits.check(sender)
            replies = await replies_over_limit(
                verdict, body["message"], domain_of(request.app), self.name()
            )
            if replies is not None:
                return response.json(
                    [{"recipient_id": sender, "text": reply} for reply in replies]
                )
            text = guard_text(self.store, self.name(), sender, body["message"])
            collector = CollectingOutputChannel()
            message = UserMessage(
                text,
                collector,
                sender,
                input_channel=self.name(),
                metadata=body.get("metadata"),
            )
            answered = await answer(on_new_message, message, collector)
            remember_buttons(self.store, self.name(), sender, answered)
            return response.json(answered)

        return webhook
