"""The website widget's channel: Socket.IO on ``/socket.io``, strict about its input.

Rasa's own ``SocketIOInput`` raises on a ``user_uttered`` payload that is not an
object, lets any socket speak for any conversation whose id it names, turns CORS
checks off, and (with python-socketio 5.x, where ``enter_room`` is a coroutine it
does not await) never joins the session's room, so persisted sessions get no
answers. This channel keeps its name, events and protocol and:

- answers a malformed ``user_uttered`` with a ``message_error`` event and a short
  reason, and a failed turn with a ``message_error`` too, instead of silence;
- issues the conversation id itself: ``session_request`` gets back the id it
  named only if this server signed it (:func:`issue_session_id`), else a new one,
  so a client cannot join a conversation by naming its id (another widget's, or a
  REST or SMS sender's); the widget keeps the id it got and names it on reconnect;
- speaks only for the session the socket got with ``session_request``;
- answers a session or client address over its rate limit itself
  (``channels.rate_limit``);
- starts the Rasa session as soon as the widget asks for it, so the assistant's
  introduction (``utter_intro``: what it is, not medical advice, 911) is the first
  thing the patient reads when the chat opens, and the widget needs no greeting of
  its own (one greeting, not two);
- accepts connections only from the origins in ``WIDGET_ALLOWED_ORIGINS``;
- passes the text through ``channels.guard`` and remembers the buttons it sends;
- never logs message text.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeGuard

from rasa.core.agent import Agent
from rasa.core.channels.channel import (
    InputChannel,
    OutputChannel,
    UserMessage,
    decode_bearer_token,
)
from rasa.core.channels.socketio import SocketBlueprint, SocketIOInput, SocketIOOutput
from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncServer

from channels.guard import guard_text, remember_buttons
from channels.rate_limit import (
    RateLimits,
    Verdict,
    client_address,
    domain_of,
    replies_over_limit,
)
from channels.store import ChannelStore, OpensStoreLazily
from clinic_common import settings
from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

CHANNEL = "socketio"
ERROR_EVENT = "message_error"
MAX_MESSAGE_LENGTH = 10_000
# One Engine.IO packet: a 10,000-character message, JSON-escaped, fits easily.
MAX_PACKET_BYTES = 128 * 1024
SESSION_TOKEN = re.compile(r"[0-9a-f]{32}")
NO_SESSION = "Ask for a session with 'session_request' first."
WRONG_SESSION = "'session_id' is not the session of this connection."
TURN_FAILED = "The assistant could not answer. Please try again."


def allowed_origins() -> List[str]:
    """``$WIDGET_ALLOWED_ORIGINS`` (comma-separated), else the demo page's origin."""
    return list(settings.load().widget_allowed_origins)


def session_signature(token: str) -> str:
    """The server's signature of a session token (12 hex characters).

    The keyed hash of ``clinic_common.privacy`` (the install's secret in
    ``$STATE_DIR``, mode 600), under this channel's own prefix, so it never equals a
    conversation key in the logs. Guessing one takes about 2**47 tries, each a
    ``session_request`` under nginx's per-address limit.
    """
    return conversation_key(f"{CHANNEL}-session:{token}").removeprefix("c-")


def issue_session_id() -> str:
    """A new conversation id: a random token and the server's signature of it."""
    token = secrets.token_hex(16)
    return f"{token}-{session_signature(token)}"


def is_issued(session_id: Any) -> TypeGuard[str]:
    """Whether ``session_id`` is one this server issued (its signature is right)."""
    if not isinstance(session_id, str):
        return False
    token, _, signature = session_id.partition("-")
    return bool(SESSION_TOKEN.fullmatch(token)) and hmac.compare_digest(
        signature, session_signature(token)
    )


def message_problem(data: Any, metadata_key: str = "metadata") -> Optional[str]:
    """Why a ``user_uttered`` payload is not acceptable, or None if it is."""
    if not isinstance(data, dict):
        return "The message must be an object."
    message = data.get("message")
    if not isinstance(message, str):
        return "'message' must be a string."
    if len(message) > MAX_MESSAGE_LENGTH:
        return f"'message' is longer than {MAX_MESSAGE_LENGTH} characters."
    metadata = data.get(metadata_key)
    if metadata is not None and not isinstance(metadata, dict):
        return f"'{metadata_key}' must be an object."
    return None


class AppSocketBlueprint(SocketBlueprint):
    """Rasa's Socket.IO blueprint, keeping the app it joins (to reach its agent)."""

    def register(self, app: Sanic, options: Dict[str, Any]) -> None:
        """Attaches Socket.IO to ``app`` and remembers ``app``."""
        self.ctx.app = app
        super().register(app, options)

    def agent(self) -> Optional[Agent]:
        """The Rasa agent of the app, once it is loaded and ready."""
        app = getattr(self.ctx, "app", None)
        agent = getattr(app.ctx, "agent", None) if app is not None else None
        return agent if isinstance(agent, Agent) and agent.is_ready() else None


async def start_session(agent: Agent, sender: str, output: OutputChannel) -> None:
    """Runs Rasa's session start for ``sender`` now, unless its session is live.

    As for a message, under the conversation's lock. A new or expired conversation
    gets ``action_session_start`` (clinic_core/session.py), whose introduction goes
    out through ``output``; a live one gets nothing, so a reconnect repeats nothing.
    """
    async with agent.lock_store.lock(sender):
        processor = agent.processor
        assert processor is not None  # the agent is ready
        tracker = await processor.fetch_tracker_and_update_session(sender, output)
        await processor.save_tracker(tracker)


class GuardedSocketIOOutput(SocketIOOutput):
    """Socket.IO output that remembers the buttons it offers to each session."""

    def __init__(self, sio: AsyncServer, bot_message_evt: str, store: ChannelStore):
        """Sends ``bot_message_evt`` events; records offered buttons in ``store``."""
        super().__init__(sio, bot_message_evt)
        self.store = store

    async def send_text_with_buttons(
        self,
        recipient_id: str,
        text: str,
        buttons: List[Dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        """Records the buttons before sending them, so a quick click is known."""
        remember_buttons(self.store, CHANNEL, recipient_id, [{"buttons": buttons}])
        await super().send_text_with_buttons(recipient_id, text, buttons, **kwargs)


class GuardedSocketIOInput(OpensStoreLazily, SocketIOInput):
    """Socket.IO input that validates messages and guards command payloads."""

    @classmethod
    def name(cls) -> str:
        """Keeps Rasa's channel name, so the widget and responses see ``socketio``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InputChannel:
        """Rasa's options; sessions persist unless ``session_persistence: false``."""
        credentials = credentials or {}
        return cls(
            credentials.get("user_message_evt", "user_uttered"),
            credentials.get("bot_message_evt", "bot_uttered"),
            credentials.get("namespace"),
            credentials.get("session_persistence", True),
            credentials.get("socketio_path", "/socket.io"),
            credentials.get("jwt_key"),
            credentials.get("jwt_method", "HS256"),
            credentials.get("metadata_key", "metadata"),
        )

    def __init__(
        self,
        *args: Any,
        store: Optional[ChannelStore] = None,
        limits: Optional[RateLimits] = None,
        **kwargs: Any,
    ) -> None:
        """Rasa's arguments; the store is opened on first use."""
        super().__init__(*args, **kwargs)
        self._store = store
        self.limits = limits or RateLimits.from_settings()

    def get_output_channel(self) -> Optional[OutputChannel]:
        """The output for messages Rasa sends on its own (reminders, events)."""
        if self.sio is None:
            return super().get_output_channel()
        return GuardedSocketIOOutput(self.sio, self.bot_message_evt, self.store)

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        """The health route and the Socket.IO events."""
        sio = AsyncServer(
            async_mode="sanic",
            cors_allowed_origins=allowed_origins(),
            max_http_buffer_size=MAX_PACKET_BYTES,
        )
        self.sio = sio
        namespace = self.namespace
        metadata_key = self.metadata_key or "metadata"
        blueprint = AppSocketBlueprint(
            sio, self.socketio_path, "guarded_socketio_webhook", __name__
        )

        @blueprint.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        async def send_error(sid: str, reason: str) -> None:
            await sio.emit(ERROR_EVENT, {"error": reason}, to=sid, namespace=namespace)

        @sio.on("connect", namespace=namespace)
        async def connect(sid: str, environ: Dict[str, Any], auth: Any) -> bool:
            if self.jwt_key:
                token = auth.get("token") if isinstance(auth, dict) else None
                if not isinstance(token, str) or not decode_bearer_token(
                    token, self.jwt_key, self.jwt_algorithm or ""
                ):
                    return False
            request = environ.get("sanic.request")
            address = client_address(
                getattr(request, "ip", None), environ.get("HTTP_X_FORWARDED_FOR")
            )
            await sio.save_session(sid, {"address": address}, namespace=namespace)
            return True

        @sio.on("session_request", namespace=namespace)
        async def session_request(sid: str, data: Any) -> None:
            asked = data.get("session_id") if isinstance(data, dict) else None
            if not is_issued(asked):
                asked = issue_session_id()
            session = await sio.get_session(sid, namespace=namespace)
            if self.session_persistence:
                previous = session.get("session_id")
                if previous and previous != asked:
                    await sio.leave_room(sid, previous, namespace=namespace)
                await sio.enter_room(sid, asked, namespace=namespace)
                session["session_id"] = asked
                await sio.save_session(sid, session, namespace=namespace)
            await sio.emit("session_confirm", asked, to=sid, namespace=namespace)
            agent = blueprint.agent()
            address = session.get("address", "")
            if agent is None or self.limits.check_address(address) is not Verdict.PASS:
                # The first message starts the session, as on other channels: a
                # flood of session requests loads and writes no conversations.
                return
            sender = asked if self.session_persistence else sid
            output = GuardedSocketIOOutput(sio, self.bot_message_evt, self.store)
            try:
                await start_session(agent, sender, output)
            except Exception:  # noqa: BLE001 - the first message will start it
                logger.exception("A Socket.IO session could not be started.")

        async def sender_of(sid: str, data: Dict[str, Any]) -> Tuple[str, str]:
            """(sender, "") for this socket's session, or ("", the problem)."""
            if not self.session_persistence:
                return sid, ""
            session = await sio.get_session(sid, namespace=namespace)
            current = session.get("session_id")
            if not current:
                return "", NO_SESSION
            if data.get("session_id") not in (None, current):
                return "", WRONG_SESSION
            return str(current), ""

        @sio.on(self.user_message_evt, namespace=namespace)
        async def handle_message(sid: str, data: Any) -> None:
            problem = message_problem(data, metadata_key)
            if problem:
                await send_error(sid, problem)
                return
            sender, problem = await sender_of(sid, data)
            if problem:
                await send_error(sid, problem)
                return
            output = GuardedSocketIOOutput(sio, self.bot_message_evt, self.store)
            session = await sio.get_session(sid, namespace=namespace)
            verdict = self.limits.check(sender, session.get("address"))
            app = getattr(blueprint.ctx, "app", None)
            replies = await replies_over_limit(
                verdict, data["message"], domain_of(app), CHANNEL
            )
            if replies is not None:
                for reply in replies:
                    await output.send_text_message(sender, reply)
                return
            text = guard_text(self.store, CHANNEL, sender, data["message"])
            try:
                await on_new_message(
                    UserMessage(
                        text,
                        output,
                        sender,
                        input_channel=CHANNEL,
                        metadata=data.get(metadata_key),
                    )
                )
            except Exception:  # noqa: BLE001 - the patient still gets an answer
                logger.exception("A Socket.IO message failed.")
                await send_error(sid, TURN_FAILED)

        return blueprint
