"""SMS through Twilio (``POST /webhooks/twilio/webhook``).

Twilio posts each text a patient sends to the webhook as a signed form. The channel
checks the ``X-Twilio-Signature`` (403 if it is missing or wrong) and the form (400
with a short reason), stores the message in the SMS inbox (``channels.sms_inbox``)
with its ``MessageSid``, answers Twilio with an empty TwiML ``<Response/>``, and
handles the message in a background task, which deletes it from the inbox when its
replies are in the outbox. Twilio may post the same message again (a webhook
retry): a repeat of a recorded SID is answered with the same empty TwiML and not
passed on. A message whose Rasa server stopped before handling it (a crash, kill
-9) is taken over from the inbox by another server, or by the same one started
again, about ten seconds later: nothing Twilio was told we received is lost.
Messages of one phone number are handled one at a time, in the order they arrived.
The assistant's replies are written to the SMS outbox (``channels.sms_outbox``)
and sent from there through Twilio's REST API (``Messages.json``) with aiohttp,
retried on 429, 5xx, timeouts and lost connections for up to an hour
(``SMS_RETRY_WINDOW_SECONDS``), across restarts. With a public webhook URL
(``TWILIO_WEBHOOK_URL``) each message asks Twilio for delivery reports at the
``/status`` route beside it (signed like the webhook): a text the carrier did not
deliver (``undelivered`` or ``failed``, with Twilio's error code) is marked failed
in the outbox. Without an account SID, auth token and a sender (number or
Messaging Service), the webhook answers 503 and the rest of the assistant runs as
usual; other processes ask :meth:`TwilioConfig.from_file` whether it is set.

What a patient can send, and what happens:

- **STOP** (or STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT): the
  number is recorded as opted out in ``ChannelStore`` (it survives a restart) and
  nothing is sent back: for these standard keywords Twilio itself sends the
  carrier's opt-out confirmation and blocks further messages to the number. From
  then on nothing the number sends is passed to Rasa or answered, until START.
  Keywords match the whole message only, trimmed and in any case, as Twilio matches
  them: a bare "cancel" is an opt-out (Twilio opts the number out whatever we do),
  while "cancel my appointment" is an ordinary message. With Advanced Opt-Out on a
  Messaging Service, Twilio names the keyword it matched in ``OptOutType``; the
  channel follows it, so the clinic's own keywords (say, Spanish ones) work too.
- **START** (or YES, UNSTOP) from an opted-out number: the opt-out is cleared and a
  short welcome is sent. From a number that is not opted out these words are
  ordinary messages, so "yes" still confirms a booking.
- **HELP** (or INFO): a short help text naming the clinic and "Reply STOP to opt
  out". Twilio may add its own default reply to HELP unless the clinic's Messaging
  Service has Advanced Opt-Out set up.
- **Buttons** become numbered lines ("1. Title") and "Reply 1, 2 or 3" (or
  "Reply 1-5"); the list is stored, and a reply that is only a number ("2", "#2",
  "2.", "option 2") within range is passed on as that button's payload. A number
  out of range gets "Please reply with a number from 1 to N." and is not passed on
  to Rasa (read as text it would be mistaken for a time or a date). A number when
  the last reply had no list, and any other text, goes through
  ``channels.guard.guard_text``.
- **Pictures and files** (``NumMedia`` > 0) cannot be read: the patient is asked to
  describe them in words, and any text sent with them is handled as usual.
- **A very long text** (Twilio joins the parts of a long message; people paste whole
  letters) is answered like on the other channels: Rasa's ``TextCleaner`` reads its
  first 1,000 characters. Only beyond ``MAX_INBOUND_CHARS`` is it cut here.
- **A number sending faster than ``RATE_LIMIT_PER_SECOND``** (``channels.rate_limit``)
  gets one polite "please wait" a minute and no more; its messages are not passed to
  Rasa, except that a red flag still gets the emergency guidance. STOP, START and
  HELP are honoured whatever the rate.

The replies of one turn are joined with blank lines and split into as few messages
of at most 1,600 characters as reads well: at paragraphs, then lines, sentences and
words; a word or a numbered line is never cut. Rasa picks response variations with
``channel: twilio`` for this channel. Logs never hold a phone number or message
text: a sender appears as a keyed hash of the number.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    ContextManager,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)
from urllib.parse import parse_qsl

import aiohttp
from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    OutputChannel,
    UserMessage,
)
from rasa.core.tracker_store import TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered
from rasa.shared.exceptions import RasaException
from rasa.shared.utils.io import read_config_file
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from twilio.request_validator import RequestValidator

from channels import FAILURE_NOTE
from channels.guard import buttons_of, guard_text
from channels.rate_limit import (
    SMS_NOTICE_INTERVAL,
    RateLimits,
    Verdict,
    domain_of,
    replies_over_limit,
)
from channels.sms_inbox import SmsInbox
from channels.sms_outbox import (
    OPTED_OUT,
    Delivery,
    RetryPolicy,
    SmsOutbox,
    log_failure,
    undelivered_reason,
)
from channels.store import ChannelStore, OpensStoreLazily, ReceivedSms
from clinic_common.clinic_config import clinic
from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

CHANNEL_NAME = "twilio"
# The channel's key in credentials.yml (its class, as Rasa loads it).
CREDENTIALS_KEY = f"{__name__}.TwilioSmsInput"
DEFAULT_API_BASE = "https://api.twilio.com"
MAX_SMS_CHARS = 1600  # Twilio's limit for one message body
MAX_PHONE_CHARS = 64
MAX_SID_CHARS = 64  # Twilio's SIDs are 34 characters
# Longer texts are cut, never refused: Twilio does not tell the patient about an
# error answer, so a refusal would be silence. Rasa reads the first 1,000 anyway
# (TextCleaner), as on the REST and Socket.IO channels.
MAX_INBOUND_CHARS = 10_000
MAX_MEDIA = 10  # Twilio attaches at most 10 media to one message
MAX_FORM_FIELDS = 200  # Twilio sends ~20, more with media; it adds new ones
# Delivery reports of a text Twilio took but could not deliver.
UNDELIVERED_STATUSES = ("undelivered", "failed")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

SHUTDOWN_GRACE = 10.0  # seconds to finish messages in progress at shutdown

STOP, START, HELP = "stop", "start", "help"
KEYWORDS = {
    **dict.fromkeys(
        ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"),
        STOP,
    ),
    **dict.fromkeys(("start", "yes", "unstop"), START),
    **dict.fromkeys(("help", "info"), HELP),
}

MEDIA_NOTE = "I can't open pictures or files here. Please describe it in words."

_CHOICE = re.compile(r"(?:option|number|choice)?\s*#?\s*(\d{1,2})\s*[.)]?", re.I)
# Where a text that is too long may be split, from best to worst, with the
# separator that joins the pieces again.
_SPLIT_LEVELS: Tuple[Tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\n[ \t]*\n\s*"), "\n\n"),  # paragraphs
    (re.compile(r"[ \t]*\n\s*"), "\n"),  # lines (a numbered choice is one line)
    (re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+"), " "),  # sentences
    (re.compile(r"\s+"), " "),  # words
)


# --- Pure parts: keywords, numbered choices, splitting ----------------------------


def keyword_of(text: str) -> Optional[str]:
    """``"stop"``, ``"start"`` or ``"help"`` if the whole message is such a keyword."""
    return KEYWORDS.get(text.strip().lower())


def choice_number(text: str) -> Optional[int]:
    """The number of a reply such as "2", "#2", "2." or "option 2", else None."""
    match = _CHOICE.fullmatch(text.strip())
    return int(match.group(1)) if match else None


def reply_hint(count: int) -> str:
    """The hint under a list: "Reply 1, 2 or 3", or "Reply 1-5" for longer lists."""
    if count <= 1:
        return "Reply 1"
    if count <= 3:
        numbers = [str(number) for number in range(1, count + 1)]
        return f"Reply {', '.join(numbers[:-1])} or {numbers[-1]}"
    return f"Reply 1-{count}"


def out_of_range(count: int) -> str:
    """The answer to a number that is not on the list of ``count`` choices."""
    if count <= 1:
        return "Please reply 1."
    return f"Please reply with a number from 1 to {count}."


def numbered_choices(text: str, titles: Sequence[str], first_number: int = 1) -> str:
    """The message text followed by one "N. Title" line per button."""
    lines = [text.strip()] if text.strip() else []
    lines += [
        f"{number}. {title.strip()}"
        for number, title in enumerate(titles, start=first_number)
    ]
    return "\n".join(lines)


def render_turn(
    messages: Sequence[Dict[str, Any]],
) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The paragraphs of one turn's replies, and its (title, payload) choices.

    Buttons are numbered across the whole turn; the reply hint follows the last
    list. Custom JSON (meant for the web widget) has no SMS form and is left out.
    """
    paragraphs: List[str] = []
    choices: List[Tuple[str, str]] = []
    last_list: Optional[int] = None
    for message in messages:
        text = str(message.get("text") or "").strip()
        buttons = buttons_of(message)
        if buttons:
            titles = [title for title, _ in buttons]
            paragraphs.append(numbered_choices(text, titles, len(choices) + 1))
            choices.extend(buttons)
            last_list = len(paragraphs) - 1
        elif text:
            paragraphs.append(text)
        if message.get("image"):
            paragraphs.append(f"Image: {message['image']}")
        if message.get("attachment"):
            paragraphs.append(f"Attachment: {message['attachment']}")
    if last_list is not None:
        paragraphs[last_list] += "\n" + reply_hint(len(choices))
    return paragraphs, choices


def split_for_sms(text: str, limit: int = MAX_SMS_CHARS) -> List[str]:
    """``text`` in as few messages of at most ``limit`` characters as reads well.

    Splits at paragraphs first, then at lines, sentences and words. Only a single
    word longer than ``limit`` (say, a very long link) is ever cut.
    """
    text = text.strip()
    return _split(text, limit, 0) if text else []


def _split(text: str, limit: int, level: int) -> List[str]:
    if len(text) <= limit:
        return [text]
    if level == len(_SPLIT_LEVELS):
        return [text[start : start + limit] for start in range(0, len(text), limit)]
    pattern, joiner = _SPLIT_LEVELS[level]
    parts = [part.strip() for part in pattern.split(text) if part.strip()]
    messages: List[str] = []
    current = ""
    for part in parts:
        # A part too long for one message is split at the next level; its pieces
        # never join each other again (the joiners get no shorter by level).
        for piece in _split(part, limit, level + 1):
            joined = f"{current}{joiner}{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                messages.append(current)
                current = piece
    if current:
        messages.append(current)
    return messages


# --- Configuration and the inbound form -----------------------------------------


@dataclass(frozen=True)
class TwilioConfig:
    """The Twilio account, sender and URLs (``credentials.yml``, from env vars)."""

    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    webhook_url: str = ""  # the public URL Twilio posts to; empty: the request's
    api_base: str = DEFAULT_API_BASE

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> TwilioConfig:
        """Reads the ``credentials.yml`` block; empty values mean "not set"."""
        values = {
            key: str(value or "").strip() for key, value in (credentials or {}).items()
        }
        return cls(
            account_sid=values.get("account_sid", ""),
            auth_token=values.get("auth_token", ""),
            from_number=values.get("from_number", ""),
            messaging_service_sid=values.get("messaging_service_sid", ""),
            webhook_url=values.get("webhook_url", ""),
            api_base=(values.get("api_base") or DEFAULT_API_BASE).rstrip("/"),
        )

    @classmethod
    def from_file(cls, path: Path) -> TwilioConfig:
        """The channel's block of a credentials file, read as the Rasa server does.

        ``${VAR}``s are filled in from the environment. A missing file, block or
        variable (the server would not start) reads as not configured.
        """
        try:
            credentials = read_config_file(path)
        except (OSError, RasaException):
            return cls()
        return cls.from_credentials(credentials.get(CREDENTIALS_KEY))

    @property
    def configured(self) -> bool:
        """Whether messages can be checked and sent: account, token and a sender."""
        return bool(
            self.account_sid
            and self.auth_token
            and (self.from_number or self.messaging_service_sid)
        )

    @property
    def messages_url(self) -> str:
        """Twilio's ``Messages.json`` resource of the account."""
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    @property
    def status_url(self) -> str:
        """Where Twilio posts delivery reports: ``.../status`` beside the webhook.

        Empty without a public webhook URL: the request's own URL is not one
        Twilio can reach.
        """
        base = self.webhook_url.rpartition("/")[0]
        return f"{base}/status" if base else ""

    def log_id(self, phone: str) -> str:
        """A keyed hash of the number: the same sender, but no number, in logs.

        Kept in the outbox instead of the number, and the same in every process
        with this account's token (the reminder job finds its texts by it).
        """
        key = self.auth_token.encode("utf-8")
        return hmac.new(key, phone.encode("utf-8"), hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class InboundSms:
    """One text as Twilio delivered it."""

    phone: str
    text: str
    media_count: int
    opt_out_type: str = ""  # "stop", "start" or "help" if Twilio matched a keyword
    message_sid: str = ""  # Twilio's MessageSid; empty if the form had none

    def stored(self) -> ReceivedSms:
        """The message as the SMS inbox keeps it (its row id is the store's)."""
        return ReceivedSms(
            0,
            self.message_sid or None,
            self.phone,
            self.text,
            self.media_count,
            self.opt_out_type,
        )

    @classmethod
    def of(cls, received: ReceivedSms) -> InboundSms:
        """A message from the SMS inbox."""
        return cls(
            received.phone,
            received.body,
            received.media_count,
            received.opt_out_type,
            received.message_sid or "",
        )


def parse_form(
    content_type: str, body: bytes
) -> Tuple[Optional[Dict[str, str]], Optional[str]]:
    """The form fields of the request, or the reason it is not acceptable."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return None, "The body must be form-encoded."
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        return (
            None,
            f"The body must be a UTF-8 form of at most {MAX_FORM_FIELDS} fields.",
        )
    form = dict(pairs)
    if len(form) != len(pairs):
        return None, "Each field may appear only once."
    return form, None


def read_sms(form: Dict[str, str]) -> Tuple[Optional[InboundSms], Optional[str]]:
    """The message in a Twilio form, or the reason it is not acceptable."""
    phone = form.get("From", "").strip()
    if not phone:
        return None, "'From' is required."
    if len(phone) > MAX_PHONE_CHARS or not phone.isprintable():
        return None, "'From' is not a phone number."
    media = form.get("NumMedia", "0").strip()
    if not media.isdecimal() or int(media) > MAX_MEDIA:
        return None, f"'NumMedia' must be a number from 0 to {MAX_MEDIA}."
    text = form.get("Body")
    if text is None and int(media) == 0:
        return None, "'Body' is required."
    message_sid = form.get("MessageSid", "").strip()
    if len(message_sid) > MAX_SID_CHARS or not message_sid.isprintable():
        return None, "'MessageSid' is not a Twilio message SID."
    opt_out_type = form.get("OptOutType", "").strip().lower()
    if opt_out_type not in (STOP, START, HELP):
        opt_out_type = ""
    sms = InboundSms(
        phone, (text or "")[:MAX_INBOUND_CHARS], int(media), opt_out_type, message_sid
    )
    return sms, None


def problem(reason: str, status: int) -> HTTPResponse:
    """An error answer with a short, patient-data-free reason."""
    return response.json({"error": reason}, status=status)


# --- Sending through Twilio's REST API -----------------------------------------


class TwilioMessages:
    """Sends one SMS at a time through Twilio's REST API, with aiohttp."""

    def __init__(self, config: TwilioConfig, timeout: float) -> None:
        """Prepares the client; the HTTP session is opened on first use."""
        self.config = config
        self.timeout = timeout
        self._session: Optional[aiohttp.ClientSession] = None

    def _form(self, to: str, body: str) -> Dict[str, str]:
        # A Messaging Service picks the sender itself; it wins if both are set.
        if self.config.messaging_service_sid:
            sender = {"MessagingServiceSid": self.config.messaging_service_sid}
        else:
            sender = {"From": self.config.from_number}
        form = {"To": to, **sender, "Body": body}
        if self.config.status_url:
            form["StatusCallback"] = self.config.status_url  # delivery reports
        return form

    async def send(self, to: str, body: str) -> Delivery:
        """One attempt to send one message; the outbox decides about retries."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auth=aiohttp.BasicAuth(self.config.account_sid, self.config.auth_token),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        url, form = self.config.messages_url, self._form(to, body)
        try:
            async with self._session.post(url, data=form) as answer:
                if 200 <= answer.status < 300:
                    document = await _json_of(answer)
                    sid = document.get("sid")
                    return Delivery(
                        sent=True,
                        status=answer.status,
                        message_sid=sid if isinstance(sid, str) else None,
                    )
                code = (await _json_of(answer)).get("code")
                return Delivery(
                    sent=False,
                    retryable=answer.status == 429 or answer.status >= 500,
                    status=answer.status,
                    error_code=code if isinstance(code, int) else None,
                )
        except (aiohttp.ClientError, asyncio.TimeoutError):
            # No connection, a dropped one, or no answer in time. After a timeout
            # Twilio may have sent the message already, and its API has no
            # idempotency key: another attempt can send the patient the same text
            # twice. A duplicate is better than a lost reply, so it is retried.
            return Delivery(sent=False, retryable=True)

    async def close(self) -> None:
        """Closes the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _json_of(answer: aiohttp.ClientResponse) -> Dict[str, Any]:
    """The JSON object of Twilio's answer; empty if there is none."""
    try:
        document = await answer.json(content_type=None)
    except (ValueError, aiohttp.ClientError, asyncio.TimeoutError):
        return {}
    return document if isinstance(document, dict) else {}


# --- The channel ------------------------------------------------------------------


class TwilioSmsOutput(CollectingOutputChannel):
    """Collects one turn's replies; named ``twilio`` for ``channel:`` variants."""

    @classmethod
    def name(cls) -> str:
        """Rasa picks response variations with ``channel: twilio``."""
        return CHANNEL_NAME


class TwilioPushOutput(TwilioSmsOutput):
    """Messages the assistant starts itself, each sent at once through the outbox.

    Rasa uses it for ``POST /conversations/{phone}/trigger_intent?output_channel=
    twilio`` (an appointment reminder, scheduling/reminders.py): there is no
    webhook turn whose replies would carry them. An opted-out number gets nothing.
    Numbers the patient types next refer to this message's options, or to none.
    """

    def __init__(self, channel: TwilioSmsInput) -> None:
        super().__init__()
        self._channel = channel

    async def _persist_message(self, message: Dict[str, Any]) -> None:
        await super()._persist_message(message)
        phone = str(message["recipient_id"])
        store = self._channel.store
        if store.is_opted_out(phone):
            return
        paragraphs, offered = render_turn([message])
        if offered:
            store.remember_offers(CHANNEL_NAME, phone, offered)
        else:
            store.forget_choices(CHANNEL_NAME, phone)
        await self._channel._send(phone, paragraphs, pushed=True)


class TwilioSmsInput(OpensStoreLazily, InputChannel):
    """SMS through Twilio: signed webhook in, REST API out."""

    def __init__(
        self,
        config: TwilioConfig,
        store: Optional[ChannelStore] = None,
        retry: Optional[RetryPolicy] = None,
        limits: Optional[RateLimits] = None,
    ) -> None:
        """Creates the channel; the store and the HTTP session open on first use.

        Args:
            config: the Twilio account, sender and URLs.
            store: the channel store; by default ``$STATE_DIR/channels.db``.
            retry: how long and how often replies are tried; by default one hour
                (``SMS_RETRY_WINDOW_SECONDS``), waits of 1 s doubling to 60 s.
            limits: the per-number message limits; by default from the settings.
        """
        self.config = config
        self._store = store
        self.limits = limits or RateLimits.from_settings(SMS_NOTICE_INTERVAL)
        policy = retry or RetryPolicy.from_env()
        self.messages = TwilioMessages(config, policy.timeout)
        self.outbox = SmsOutbox(
            lambda: self.store, self.messages.send, policy, self.log_id
        )
        self.inbox = SmsInbox(lambda: self.store)
        self._validator = RequestValidator(config.auth_token)
        self._tasks: Set[asyncio.Task[None]] = set()
        self._turns: Dict[str, Tuple[asyncio.Lock, int]] = {}

    @classmethod
    def name(cls) -> str:
        """The URL is ``/webhooks/twilio/webhook``."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InputChannel:
        """Builds the channel from its ``credentials.yml`` block."""
        return cls(TwilioConfig.from_credentials(credentials))

    def get_output_channel(self) -> Optional[OutputChannel]:
        """Where Rasa's external events (``trigger_intent``) send: the outbox."""
        return TwilioPushOutput(self) if self.config.configured else None

    def log_id(self, phone: str) -> str:
        """A keyed hash of the number: the same sender, but no number, in logs."""
        return self.config.log_id(phone)

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        """The health, webhook and status routes; background work stops with it."""
        webhook = Blueprint("twilio_sms_webhook", __name__)
        if not self.config.configured:
            logger.info(
                "SMS is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
                "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID): its webhook "
                "answers 503."
            )

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok", "configured": self.config.configured})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            form = self._signed_form(request, self.config.webhook_url)
            if isinstance(form, HTTPResponse):
                return form  # refused
            sms, reason = read_sms(form)
            if sms is None:
                return problem(reason or "Bad request.", 400)
            # Stored before Twilio hears of it: a server that dies now loses
            # nothing. Twilio's retry of this webhook (after a slow or lost answer)
            # gets the same answer and is not handled again.
            row = self.inbox.receive(sms.stored())
            if row is not None:
                # Counted when it arrives, not when its turn comes after the
                # number's earlier messages.
                verdict = self.limits.check(sms.phone)
                self._start(
                    self._handle(
                        sms,
                        on_new_message,
                        verdict,
                        domain_of(request.app),
                        reserve_turn(request.app, sms.phone),
                        row,
                    )
                )
            else:
                logger.info(
                    "An SMS from %s was received again (a webhook retry): not "
                    "handled twice.",
                    self.log_id(sms.phone),
                )
            return response.text(EMPTY_TWIML, content_type="text/xml")

        @webhook.route("/status", methods=["POST"])
        async def status(request: Request) -> HTTPResponse:
            form = self._signed_form(request, self.config.status_url)
            if isinstance(form, HTTPResponse):
                return form  # refused
            state = form.get("MessageStatus", "").strip().lower()
            if state in UNDELIVERED_STATUSES:
                code = form.get("ErrorCode", "").strip()
                row = self.store.sms_undelivered(
                    form.get("MessageSid", "").strip(),
                    undelivered_reason(state),
                    int(code) if code.isdecimal() else None,
                )
                if row is not None:
                    logger.error(
                        "SMS %d was not delivered: Twilio reported it %s, error code"
                        " %s.",
                        row,
                        state,
                        code or "none",
                    )
            return response.empty()

        @webhook.listener("after_server_start")
        async def send_outbox(app: Any, *_: Any) -> None:
            if self.config.configured:
                self.outbox.start()  # with what was left pending before a restart
                self.inbox.start(lambda rows: self._recover(rows, on_new_message, app))

        @webhook.listener("before_server_stop")
        async def finish(*_: Any) -> None:
            # Messages being handled get their replies into the outbox; what is
            # not sent by then stays there for the next start.
            try:
                await asyncio.wait_for(self._handled(), SHUTDOWN_GRACE)
            except asyncio.TimeoutError:
                logger.warning("SMS messages still in progress at shutdown.")
            await self.inbox.stop()
            await self.outbox.stop(SHUTDOWN_GRACE)

        @webhook.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.messages.close()

        return webhook

    def _signed_form(
        self, request: Request, public_url: str
    ) -> Union[Dict[str, str], HTTPResponse]:
        """A request's form if Twilio signed it, else the answer refusing it.

        ``public_url``: the URL Twilio posted to, when a proxy is in between
        (else the request's own).
        """
        if not self.config.configured:
            return problem("SMS is not configured.", 503)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return problem("Missing X-Twilio-Signature.", 403)
        form, reason = parse_form(request.content_type, request.body or b"")
        if form is None:
            return problem(reason or "Bad request.", 400)
        if not self._validator.validate(public_url or request.url, form, signature):
            return problem("Invalid X-Twilio-Signature.", 403)
        return form

    def _recover(
        self,
        rows: Sequence[ReceivedSms],
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        app: Any,
    ) -> None:
        """Handles messages a stopped server left in the inbox, oldest first.

        Their rate-limit count was the stopped server's: they pass.
        """
        for row in rows:
            sms = InboundSms.of(row)
            self._start(
                self._handle(
                    sms,
                    on_new_message,
                    Verdict.PASS,
                    domain_of(app),
                    reserve_turn(app, sms.phone),
                    row.id,
                    getattr(getattr(app.ctx, "agent", None), "tracker_store", None),
                )
            )

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handled(self) -> None:
        """Waits until every message received so far is handled."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Waits until every message so far is handled and its replies are out.

        Out means sent or finally failed: with the default one-hour retry window
        and Twilio down, that is an hour. For tests.
        """
        await self._handled()
        await self.outbox.wait_until_empty()

    @asynccontextmanager
    async def _turn_of(self, phone: str) -> AsyncIterator[None]:
        """One message of a number at a time, in the order they arrived."""
        lock, waiting = self._turns.get(phone, (asyncio.Lock(), 0))
        self._turns[phone] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._turns[phone]
            if waiting == 1:
                del self._turns[phone]
            else:
                self._turns[phone] = (lock, waiting - 1)

    async def _handle(
        self,
        sms: InboundSms,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        verdict: Verdict = Verdict.PASS,
        domain: Optional[Domain] = None,
        reservation: Optional[ContextManager[Any]] = None,
        row: Optional[int] = None,
        trackers: Optional[TrackerStore] = None,
    ) -> None:
        """Answers one message; ``row``: its SMS inbox row, deleted once answered.

        ``trackers``: Rasa's tracker store, for a message a stopped server left,
        whose turn it may have finished (see :func:`earlier_turn`).
        """
        try:
            with reservation or nullcontext():
                async with self._turn_of(sms.phone):
                    if row is not None and not self.inbox.still_held(row):
                        return  # its lease ran out: another server has it now
                    paragraphs = await self._answer(
                        sms, on_new_message, verdict, domain, trackers
                    )
                    await self._send(sms.phone, paragraphs, row)
        except Exception:  # noqa: BLE001 - the next message must still work
            log_failure(logger, "An SMS from %s failed (%s).", self.log_id(sms.phone))
        finally:
            if row is not None:
                self.inbox.release(row)

    async def _answer(
        self,
        sms: InboundSms,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        verdict: Verdict,
        domain: Optional[Domain],
        trackers: Optional[TrackerStore] = None,
    ) -> List[str]:
        """The paragraphs to send back; Rasa is asked only when it should be.

        STOP, START and HELP are honoured over the rate limit too.
        """
        keyword = sms.opt_out_type or keyword_of(sms.text)
        if keyword == STOP:
            self.store.set_opted_out(sms.phone, True)
            self.store.forget_choices(CHANNEL_NAME, sms.phone)
            self.store.drop_pending_sms(sms.phone, OPTED_OUT)
            return []  # Twilio sends the carrier's opt-out confirmation itself
        if self.store.is_opted_out(sms.phone):
            if keyword != START:
                return []
            self.store.set_opted_out(sms.phone, False)
            return [welcome_text()]
        if keyword == HELP:
            return [help_text()]
        over_limit = await replies_over_limit(verdict, sms.text, domain, CHANNEL_NAME)
        if over_limit is not None:
            return over_limit

        notes = [MEDIA_NOTE] if sms.media_count else []
        if not sms.text.strip() and sms.media_count:
            return notes
        text = guard_text(self.store, CHANNEL_NAME, sms.phone, sms.text)
        number = choice_number(sms.text)
        choices = self.store.latest_choices(CHANNEL_NAME, sms.phone)
        if number is not None and choices:
            if not 1 <= number <= len(choices):
                return [*notes, out_of_range(len(choices))]
            text = choices[number - 1][1]

        output = TwilioSmsOutput()
        try:
            earlier = await earlier_turn(trackers, sms)
            if earlier is not None:
                output.messages = earlier
            else:
                await on_new_message(
                    UserMessage(
                        text,
                        output,
                        sms.phone,
                        input_channel=CHANNEL_NAME,
                        message_id=sms.message_sid or None,
                    )
                )
        except Exception:  # noqa: BLE001 - the patient still gets an answer
            log_failure(
                logger, "Rasa failed on an SMS from %s (%s).", self.log_id(sms.phone)
            )
            if not output.messages:
                return [*notes, FAILURE_NOTE]
        paragraphs, offered = render_turn(output.messages)
        if offered:
            self.store.remember_offers(CHANNEL_NAME, sms.phone, offered)
        else:
            # Numbers always refer to the list of the latest reply.
            self.store.forget_choices(CHANNEL_NAME, sms.phone)
        return [*notes, *paragraphs]

    async def _send(
        self,
        phone: str,
        paragraphs: Sequence[str],
        row: Optional[int] = None,
        pushed: bool = False,
    ) -> None:
        """Writes one turn's replies to the outbox, in order, and wakes the sender.

        The message's inbox ``row`` is deleted in the same transaction. ``pushed``:
        the assistant started them (:class:`TwilioPushOutput`).
        """
        bodies = split_for_sms("\n\n".join(paragraphs))
        self.store.queue_sms(
            phone,
            bodies,
            self.log_id(phone),
            conversation_key(phone),
            handled=row,
            pushed=pushed,
        )
        if bodies:
            self.outbox.wake()


async def earlier_turn(
    trackers: Optional[TrackerStore], sms: InboundSms
) -> Optional[List[Dict[str, Any]]]:
    """The replies Rasa gave ``sms`` already, if its conversation holds it.

    A server killed after Rasa saved a message's turn, but before its replies
    reached the outbox (with the message's inbox row deleted), leaves a message that
    was read: it is answered from the conversation, not read twice. Rasa keeps
    each message's ``MessageSid`` as its ``message_id``. None: not read yet (or no
    SID, or no tracker store to ask).
    """
    if trackers is None or not sms.message_sid:
        return None
    tracker = await trackers.retrieve(sms.phone)
    replies: Optional[List[Dict[str, Any]]] = None
    for event in tracker.events if tracker is not None else ():
        if isinstance(event, UserUttered):
            if replies is not None:
                break  # the next message's turn
            if event.message_id == sms.message_sid:
                replies = []
        elif replies is not None and isinstance(event, BotUttered):
            replies.append(event.message())
    return replies


def help_text() -> str:
    """The answer to HELP: who this is, what it does, how to opt out."""
    facts = clinic()  # clinic.yml, read on first use
    return (
        f"{facts.name}: this is our virtual assistant. Ask about back spasms and "
        "their treatment, or to book, change or cancel an appointment (for example "
        f'"cancel my appointment").{facts.contact_sentence()} In an emergency, '
        "call 911. Reply STOP to opt out."
    )


def welcome_text() -> str:
    """The answer to START from an opted-out number."""
    return (
        f"Welcome back to {clinic().name}. You'll get replies here again. "
        "Reply HELP for help, STOP to opt out."
    )


def reserve_turn(app: Any, phone: str) -> ContextManager[Any]:
    """The message's ticket in the lock store, taken as it arrives.

    The webhook answers Twilio before the message's turn; a ticket taken only then
    would let the number's next message, received by another Rasa server
    meanwhile, go first. The scaled profile's lock store reserves one
    (clinic_core.lock_store.RedisTicketLockStore.reserve); others need none.
    """
    agent = getattr(app.ctx, "agent", None)
    reserve = getattr(getattr(agent, "lock_store", None), "reserve", None)
    return reserve(phone) if reserve is not None else nullcontext()
