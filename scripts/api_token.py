"""The Rasa HTTP API token: made, checked and kept in ``$STATE_DIR/rasa_api_token``.

``make run`` starts the Rasa server with ``--enable-api`` (``clinicbot retrain
--publish`` swaps the model through it), and Rasa leaves that API open without a token.
A token is letters and digits (``secrets.token_hex``), so it can never be read as an
option; a saved one that is empty, malformed or starts with "-" (older versions could
write one) is replaced at once with a note. A token set in ``RASA_API_TOKEN`` is the
operator's: a bad one is reported with the fix, never changed.

Usage (scripts/run.sh): python -m scripts.api_token STATE_DIR   prints the token
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path
from typing import Mapping, Optional

from clinic_common.settings import SettingsError, load

TOKEN_FILE = "rasa_api_token"  # in $STATE_DIR; the staff commands read it too
# What Rasa's token check and a URL query (``?token=``) take without escaping, and
# what no command line reads as an option: no leading "-".
_GOOD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{15,}")


class TokenError(Exception):
    """RASA_API_TOKEN cannot be used; the message says why and what to do."""


def new_token() -> str:
    """A fresh token: 64 hexadecimal digits."""
    return secrets.token_hex(32)


def token_problem(token: str) -> Optional[str]:
    """What is wrong with ``token``, or None when it can be used."""
    if not token:
        return "is empty"
    if token.startswith("-"):
        return 'starts with "-", which a command line reads as an option'
    if not _GOOD.fullmatch(token):
        return (
            "must be at least 16 characters of letters, digits, '_' and '-' "
            "(it goes into a URL)"
        )
    return None


def api_token(state_dir: Path, environ: Mapping[str, str]) -> str:
    """The token the Rasa server is to use.

    ``RASA_API_TOKEN`` when set (``TokenError`` if it is bad); otherwise the saved
    token, written anew (mode 600) when missing or bad.
    """
    given = load(environ).rasa_api_token
    if given is not None:
        problem = token_problem(given)
        if problem:
            raise TokenError(
                f"RASA_API_TOKEN {problem}. Set it to letters and digits, e.g. "
                f"the output of: python3 -c 'import secrets; "
                f"print(secrets.token_hex(32))', or unset it to let make run keep "
                f"one in {state_dir / TOKEN_FILE}."
            )
        return given
    path = state_dir / TOKEN_FILE
    try:
        saved: Optional[str] = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        saved = None
    if saved is not None:
        problem = token_problem(saved)
        if problem is None:
            return saved
        print(
            f"note: the saved Rasa API token in {path} {problem}; replaced it with "
            "a new one.",
            file=sys.stderr,
        )
    token = new_token()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    path.chmod(0o600)  # an older file may have had another mode
    return token


def main() -> int:
    """Prints the token for the state directory given; 2 with the reason if bad."""
    if len(sys.argv) != 2:
        print("usage: python -m scripts.api_token STATE_DIR", file=sys.stderr)
        return 2
    try:
        print(api_token(Path(sys.argv[1]), os.environ))
    except (TokenError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
