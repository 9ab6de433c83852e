"""What the action server does when an action raises: one log line, no patient data.

rasa_sdk answers an action that raises with HTTP 500, logs the exception with its
traceback, and puts ``str(exception)`` and the whole request (the tracker: names,
phone numbers, every message) in the reply's body. ``install()`` wraps
``ActionExecutor.run`` so that such a failure is logged as one line (the action, a
conversation key and the exception's type, never its message) and raised again as
:class:`ActionFailed`, whose text names the action only. The Rasa server then tells
the patient that this part is unavailable (``clinic_core/action_guard.py``).

Called from ``actions/__init__.py``: the action server imports the package first.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Coroutine, Dict, Optional

from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

from clinic_common.privacy import conversation_key

logger = logging.getLogger(__name__)

RunMethod = Callable[
    [ActionExecutor, Dict[str, Any]], Coroutine[Any, Any, Optional[Dict[str, Any]]]
]
_SDKS_RUN: Optional[RunMethod] = None


class ActionFailed(Exception):
    """An action raised; its text names the action and nothing of the patient."""


async def guarded_run(
    executor: ActionExecutor, action_call: Dict[str, Any]
) -> Optional[Dict[str, Any]]:
    """``ActionExecutor.run``, with failures logged and raised without patient data."""
    assert _SDKS_RUN is not None, "install() first"
    try:
        return await _SDKS_RUN(executor, action_call)
    except (ActionExecutionRejection, ActionNotFoundException):
        raise
    except Exception as error:  # noqa: BLE001 - logged safely, raised again
        name = str(action_call.get("next_action"))
        logger.error(
            "Action %s failed in conversation %s (%s).",
            name,
            conversation_key(str(action_call.get("sender_id", ""))),
            type(error).__name__,
        )
        raise ActionFailed(f"Action {name} failed.") from None


def install() -> None:
    """Makes the action server run actions through :func:`guarded_run`."""
    global _SDKS_RUN
    if _SDKS_RUN is None:
        _SDKS_RUN = ActionExecutor.run
        ActionExecutor.run = guarded_run  # type: ignore[assignment,method-assign]
