"""The scaled profile's conversation store: Rasa's, riding out a database restart.

Several Rasa servers write the same conversations there, so the in-memory cache of
``clinic_core.tracker_store`` (one process's) is not used: this is Rasa's own
``SQLTrackerStore`` with two changes, both for a PostgreSQL that restarts or drops
connections (``make chaos``: a turn saved while PostgreSQL restarted was answered
but missing from the conversation afterwards):

* its pool checks a connection before handing it out (``pool_pre_ping``), so the
  connections a restart broke are replaced instead of failing their next turn;
* a save or a read that fails on the connection (``OperationalError``,
  ``InterfaceError``) is tried again every ``RETRY_PAUSE_SECONDS`` for up to
  ``RETRY_SECONDS``, then raised: the channel then answers "please try again", and
  the SMS inbox keeps the text. A save tried again writes only what the database
  does not hold yet (Rasa counts the stored events first), so nothing is doubled.

Failures are logged with a conversation key and the database's short reason, never
a statement or its values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from rasa.shared.core.trackers import DialogueStateTracker

from clinic_common.privacy import conversation_key
from clinic_core.tracker_store import database_reason

logger = logging.getLogger(__name__)

RETRY_SECONDS = 10.0
RETRY_PAUSE_SECONDS = 0.2
# What a dropped connection or a server that is not accepting connections raises.
CONNECTION_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)

T = TypeVar("T")


class SharedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` that checks pooled connections and retries on failure."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Connects as ``SQLTrackerStore`` does, then pings pooled connections."""
        super().__init__(*args, **kwargs)
        self.engine: sa.engine.Engine = self.engine
        url = self.engine.url
        self.engine.dispose()
        self.engine = sa.create_engine(
            url, pool_pre_ping=True, **create_engine_kwargs(url)
        )
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Saves the new events, trying again while the database is unreachable."""
        await self._retrying(
            lambda: super(SharedSQLTrackerStore, self).save(tracker),
            "save",
            tracker.sender_id,
        )

    async def retrieve(self, sender_id: str) -> Optional[DialogueStateTracker]:
        """Reads the conversation, trying again while the database is unreachable."""
        return await self._retrying(
            lambda: super(SharedSQLTrackerStore, self).retrieve(sender_id),
            "read",
            sender_id,
        )

    async def _retrying(
        self, call: Callable[[], Awaitable[T]], what: str, sender_id: str
    ) -> T:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return await call()
            except CONNECTION_ERRORS as error:
                if time.monotonic() + RETRY_PAUSE_SECONDS > deadline:
                    logger.error(
                        "Could not %s conversation %s: %s.",
                        what,
                        conversation_key(sender_id),
                        database_reason(error),
                    )
                    raise
                logger.warning(
                    "Trying again to %s conversation %s: %s.",
                    what,
                    conversation_key(sender_id),
                    database_reason(error),
                )
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
