"""The website widget's channel: Socket.IO on ``/socket.io``, strict about its input.

Rasa's own ``SocketIOInput`` raises on a ``user_uttered`` payload that is not an
object, lets any socket speak for any conversation whose id it names, turns CORS
checks off, and (with python-socketio 5.x, where ``enter_room`` is a coroutine it
does not await) never joins the session's room, so persisted sessions get no
answers. This channel keeps its name, events and protocol and:

- answers a malformed ``user_uttered`` with a ``message_error`` event and a short
  reason, and a failed turn with a ``message_error`` too, instead of silence;
- speaks only for the session the socket asked for with ``session_request``;
- starts the Rasa session as soon as the widget asks for it, so the assistant's
  introduction (``utter_intro``: what it is, not medical advice, 911) is the first
  thing the patient reads when the chat opens, and the widget needs no greeting of
  its own (one greeting, not two);
- accepts connections only from the origins in ``WIDGET_ALLOWED_ORIGINS``;
- passes the text through ``channels.guard`` and remembers the buttons it sends;
- never logs message text.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

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
from channels.store import ChannelStore, OpensStoreLazily
from clinic_common import settings

logger = logging.getLogger(__name__)

CHANNEL = "socketio"
ERROR_EVENT = "message_error"
MAX_MESSAGE_LENGTH = 10_000
# One Engine.IO packet: a 10,000-character message, JSON-escaped, fits easily.
MAX_PACKET_BYTES = 128 * 1024
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
NO_SESSION = "Ask for a session with 'session_request' first."
WRONG_SESSION = "'session_id' is not the session of this connection."
TURN_FAILED = "The assistant could not answer. Please try again."


def allowed_origins() -> List[str]:
    """``$WIDGET_ALLOWED_ORIGINS`` (comma-separated), else the demo page's origin."""
    return list(settings.load().widget_allowed_origins)


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
        self, *args: Any, store: Optional[ChannelStore] = None, **kwargs: Any
    ) -> None:
        """Rasa's arguments; the store is opened on first use."""
        super().__init__(*args, **kwargs)
        self._store = store

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
            if not self.jwt_key:
                return True
            token = auth.get("token") if isinstance(auth, dict) else None
            return bool(
                isinstance(token, str)
                and decode_bearer_token(token, self.jwt_key, self.jwt_algorithm or "")
            )

        @sio.on("session_request", namespace=namespace)
        async def session_request(sid: str, data: Any) -> None:
            asked = data.get("session_id") if isinstance(data, dict) else None
            if not isinstance(asked, str) or not SESSION_ID.fullmatch(asked):
                asked = uuid.uuid4().hex
            if self.session_persistence:
                session = await sio.get_session(sid, namespace=namespace)
                previous = session.get("session_id")
                if previous and previous != asked:
                    await sio.leave_room(sid, previous, namespace=namespace)
                await sio.enter_room(sid, asked, namespace=namespace)
                await sio.save_session(sid, {"session_id": asked}, namespace=namespace)
            await sio.emit("session_confirm", asked, to=sid, namespace=namespace)
            agent = blueprint.agent()
            if agent is None:
                return  # the first message starts the session, as on other channels
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
