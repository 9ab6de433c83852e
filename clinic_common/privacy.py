"""Conversation keys: the same conversation in every log line, without its sender id.

A conversation's sender id is patient data on SMS (the phone number) and a session id
on the web. Logs name a conversation by a keyed hash of it instead: the same key for
the same conversation in every log line and process, so a failure can be followed,
but nothing a reader could turn back into a number. The key is a random secret kept
in ``$STATE_DIR/log_key`` (readable by its owner only), made on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from clinic_common import settings

KEY_FILE_NAME = "log_key"


@lru_cache(maxsize=1)
def _key() -> bytes:
    """The install's secret; made once, atomically, by whichever process is first."""
    path = settings.load().state_dir / KEY_FILE_NAME
    try:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
        path.unlink()  # empty or cut short: replace it
    except FileNotFoundError:
        pass
    except OSError:
        return secrets.token_hex(32).encode("ascii")  # unreadable: this process only
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{KEY_FILE_NAME}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_hex(32).encode("ascii"))
        try:
            os.link(draft, path)  # fails if another process was first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
        return path.read_bytes().strip()
    except OSError:
        return secrets.token_hex(32).encode("ascii")


def conversation_key(sender_id: str) -> str:
    """12 hex characters naming the conversation in logs (``c-`` prefixed)."""
    digest = hmac.new(_key(), sender_id.encode("utf-8"), hashlib.sha256)
    return "c-" + digest.hexdigest()[:12]
