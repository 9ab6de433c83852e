"""Starts the Rasa server with its API token taken from the environment.

Usage: python -m scripts.rasa_server run [rasa run options, without --auth-token]

``rasa run --auth-token TOKEN`` would show the token to every local user in ``ps``.
This launcher reads ``RASA_API_TOKEN`` (which only the account running the assistant
can read, in /proc/<pid>/environ) and adds ``--auth-token=TOKEN`` to ``sys.argv``
inside the process before calling Rasa's own command line, so /proc/<pid>/cmdline
never holds it. The ``=`` form keeps any token from being read as an option.

Each start (supervisord's restart after a crash included) serves the model staff
last published (``clinicbot retrain --publish`` or ``rollback``) when it is still
valid, as scripts/run.sh does, instead of the ``--model`` the command was written
with: a restart never brings an older model back. Only a ``--model`` of the project's
models directory is replaced: a benchmark's or a test's own model is served as given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Mapping, Optional

from clinic_common.settings import load
from scripts.api_token import token_problem


def argv_with_token(argv: List[str], environ: Mapping[str, str]) -> List[str]:
    """``argv`` plus ``--auth-token=`` the environment's token; exits if it is bad."""
    if any(arg == "--auth-token" or arg.startswith("--auth-token=") for arg in argv):
        sys.exit(
            "error: give the token in RASA_API_TOKEN, not --auth-token (the command "
            "line is visible to every local user)."
        )
    token = load(environ).rasa_api_token or ""
    problem = token_problem(token)
    if problem:
        sys.exit(
            f"error: RASA_API_TOKEN {problem}: the Rasa server does not start with "
            "its HTTP API open. scripts/run.sh sets it (see scripts/api_token.py)."
        )
    return [*argv, f"--auth-token={token}"]


def argv_with_model(argv: List[str], published: Optional[Path]) -> List[str]:
    """``argv`` with the value of ``--model`` replaced by ``published``, if any."""
    if published is None or "--model" not in argv[:-1]:
        return list(argv)
    at = argv.index("--model") + 1
    return [*argv[:at], str(published), *argv[at + 1 :]]


def in_models_dir(argv: List[str], models_dir: Path) -> bool:
    """Whether the ``--model`` of ``argv`` is a file of ``models_dir``."""
    if "--model" not in argv[:-1]:
        return False
    model = Path(argv[argv.index("--model") + 1])
    return model.resolve().parent == models_dir.resolve()


def main() -> None:
    """Runs ``rasa`` with the token and the published model."""
    from staff.project import Settings
    from staff.retrain import restart_model

    settings = Settings.from_env()
    published = None
    if in_models_dir(sys.argv, settings.project.models_dir):
        try:
            published = restart_model(settings)
        except (OSError, ValueError) as error:  # an unreadable models/history.json
            print(f"note: serving --model; the published model is unknown: {error}")
    sys.argv = argv_with_model(argv_with_token(sys.argv, os.environ), published)
    sys.argv[0] = "rasa"
    from rasa.__main__ import main as rasa_main  # after the check: a slow import

    rasa_main()


if __name__ == "__main__":
    main()
