"""Per-sender message limits: one sender's flood cannot make other patients wait.

Measured without limits: one sender posting 200 messages a second for 10 s made
every other patient wait 20-28 s per message, and left a conversation of 4,919
events. Each channel therefore keeps a token bucket per sender (the phone number on
SMS, the conversation on REST and the widget) and one per client address on the
widget, in the Rasa server's memory: ``RATE_LIMIT_BURST`` messages at once, then
``RATE_LIMIT_PER_SECOND`` (an address gets ``ADDRESS_FACTOR`` times both, for a
clinic's waiting room behind one address). ``RATE_LIMIT_PER_SECOND=0`` switches the
limits off.

A message over the limit is not passed to Rasa, so it costs almost nothing and never
enters the conversation. Its sender gets :data:`POLITE_REPLY` instead: on REST and
the widget every time (it costs nothing, and a person typing fast is never left
without an answer), on SMS at most once per :data:`SMS_NOTICE_INTERVAL` (each text
is a message sent and paid for). A message over the limit is still read with
``clinic_nlu.red_flags`` and, when it has one, answered at once with the emergency
or crisis guidance of the domain (its language too), as Rasa would have answered
it. A flood cannot delay that answer, and it is not recorded in the conversation.

With several Rasa servers each keeps its own buckets: nginx's per-address limit
(scripts/services.py) bounds the total; a sender's own limit is per server.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet
from rasa.shared.core.trackers import DialogueStateTracker

from clinic_common import settings
from clinic_common.privacy import conversation_key
from clinic_nlu.red_flags import RedFlag, find_red_flag

logger = logging.getLogger(__name__)

POLITE_REPLY = (
    "You're sending messages faster than I can read them. Please wait a moment, "
    "then send your message again."
)
SMS_NOTICE_INTERVAL = 60.0  # seconds between two polite texts to one number
ADDRESS_FACTOR = 5.0
# Buckets kept at most; beyond, the least recently used are dropped.
MAX_BUCKETS = 50_000
RED_FLAG_LANGUAGE_SLOT = "red_flag_language"  # domain.yml fills it for red flags


class Verdict(enum.Enum):
    """What to do with one message."""

    PASS = "pass"  # under the limit: Rasa answers it
    NOTICE = "notice"  # over it: the polite reply
    QUIET = "quiet"  # over it, and the polite reply was sent recently


@dataclass
class _Bucket:
    tokens: float
    updated: float
    noticed: Optional[float] = None  # when its sender was last told


@dataclass
class TokenBuckets:
    """One token bucket per key: ``burst`` at once, then ``rate`` per second.

    The buckets are kept least recently used first, so that the idle ones (full
    again, their notice long past: no different from a new one) are dropped from the
    front in constant time, and at most :data:`MAX_BUCKETS` are kept whatever the
    number of senders.
    """

    rate: float
    burst: float
    notice_interval: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def take(self, key: str) -> Verdict:
        """Takes a token for one message of ``key``, if it has one."""
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        self._drop_idle(now)
        self._buckets[key] = bucket  # the most recently used: last
        bucket.tokens = min(
            self.burst, bucket.tokens + (now - bucket.updated) * self.rate
        )
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict.PASS
        if bucket.noticed is None or now - bucket.noticed >= self.notice_interval:
            bucket.noticed = now
            return Verdict.NOTICE
        return Verdict.QUIET

    def _drop_idle(self, now: float) -> None:
        """Forgets the least recently used buckets that are idle, or over the cap."""
        idle = max(self.burst / self.rate, self.notice_interval)
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if len(self._buckets) < MAX_BUCKETS and now - oldest.updated < idle:
                return
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        """The number of buckets kept."""
        return len(self._buckets)


class RateLimits:
    """A channel's limits: per sender, and per client address where it has one."""

    def __init__(
        self,
        rate: float,
        burst: float,
        notice_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate`` messages per second after ``burst`` at once; 0 means no limit.

        A sender over the limit is told at most once per ``notice_interval`` s.
        """
        self.enabled = rate > 0
        self.senders = TokenBuckets(rate, burst, notice_interval, clock)
        self.addresses = TokenBuckets(
            rate * ADDRESS_FACTOR, burst * ADDRESS_FACTOR, notice_interval, clock
        )

    @classmethod
    def from_settings(cls, notice_interval: float = 0.0) -> RateLimits:
        """``RATE_LIMIT_PER_SECOND`` and ``RATE_LIMIT_BURST``."""
        values = settings.load()
        return cls(
            values.rate_limit_per_second, values.rate_limit_burst, notice_interval
        )

    def check(self, sender: str, address: Optional[str] = None) -> Verdict:
        """The verdict on one message of ``sender`` (from ``address``, if known)."""
        if not self.enabled:
            return Verdict.PASS
        verdicts = [self.senders.take(sender)]
        if address:
            verdicts.append(self.addresses.take(address))
        if all(verdict is Verdict.PASS for verdict in verdicts):
            return Verdict.PASS
        if Verdict.NOTICE in verdicts:
            logger.info("Messages over the rate limit (%s).", conversation_key(sender))
            return Verdict.NOTICE
        return Verdict.QUIET

    def check_address(self, address: str) -> Verdict:
        """The verdict on a request of ``address`` that is no message (a session)."""
        return self.addresses.take(address) if self.enabled else Verdict.PASS


async def red_flag_guidance(
    domain: Domain, red_flag: RedFlag, channel: str
) -> Optional[str]:
    """The domain's emergency or crisis guidance for ``red_flag``, if it has one.

    Rendered by Rasa's own generator (conditions, channel variants), for a tracker
    holding only the guidance's language, as the red-flag rules answer it.
    """
    tracker = DialogueStateTracker.from_events(
        "", [SlotSet(RED_FLAG_LANGUAGE_SLOT, red_flag.language)], slots=domain.slots
    )
    generator = TemplatedNaturalLanguageGenerator(domain.responses)
    rendered = await generator.generate(f"utter_{red_flag.intent}", tracker, channel)
    text = str(rendered.get("text") or "") if rendered else ""
    return text or None


async def replies_over_limit(
    verdict: Verdict, text: str, domain: Optional[Domain], channel: str
) -> Optional[List[str]]:
    """The texts that answer a message instead of Rasa, or None to pass it on.

    None for a message under the limit, and for a red flag over it while no model
    is loaded (Rasa then answers it as best it can).
    """
    if verdict is Verdict.PASS:
        return None
    red_flag = find_red_flag(text)
    if red_flag is None:
        return [POLITE_REPLY] if verdict is Verdict.NOTICE else []
    guidance = await red_flag_guidance(domain, red_flag, channel) if domain else None
    return [guidance] if guidance else None


def domain_of(app: Any) -> Optional[Domain]:
    """The domain of the Rasa agent on the Sanic ``app``, once a model is loaded."""
    agent = getattr(getattr(app, "ctx", None), "agent", None)
    domain = getattr(agent, "domain", None)
    return domain if isinstance(domain, Domain) else None


def client_address(peer: Optional[str], forwarded_for: Optional[str]) -> str:
    """The client's address, for the per-address limit.

    Through nginx on this machine (a loopback peer), the address nginx saw: the
    last ``X-Forwarded-For`` entry, the one it appended. Otherwise the peer's own.
    """
    if peer in ("127.0.0.1", "::1") and forwarded_for:
        return forwarded_for.rsplit(",", 1)[-1].strip() or peer
    return peer or ""
