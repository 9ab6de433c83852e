"""Checks action-server replies against Rasa's schema with a validator built once.

Rasa 3.6 checks every reply of the action server with ``jsonschema.validate(reply,
schema)``. That function first validates the *schema* against the JSON Schema
meta-schema, on every call, although Rasa's schema never changes: under load it was
a tenth of the Rasa server's time (docs/pipeline.md, "Serving cost"). ``install()``
replaces ``RemoteAction._validate_action_result`` with the same check, the same
schema (read from Rasa on first use) and the same ``ValidationError`` message, with
the schema checked once.

config.yml switches it on (``action_replies``, see ``clinic_core/extensions.py``).
``uninstall()`` restores Rasa's method (for tests).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, Optional

from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

_RASAS_METHOD: Optional[Callable[[RemoteAction, Dict[str, Any]], bool]] = None


@lru_cache(maxsize=1)
def _validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)  # once, as Rasa does on every call
    return validator_class(schema)


def validate_action_result(_action: RemoteAction, result: Dict[str, Any]) -> bool:
    """``jsonschema.validate(result, schema)`` with the checked schema reused."""
    error = best_match(_validator().iter_errors(result))
    if error is not None:
        error.message += (
            ". Failed to validate Action server response from API, "
            "make sure your response from the Action endpoint is valid. "
            "For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise error
    return True


def install() -> None:
    """Makes Rasa use ``validate_action_result`` (idempotent)."""
    global _RASAS_METHOD
    if _RASAS_METHOD is None:
        _RASAS_METHOD = RemoteAction._validate_action_result
        RemoteAction._validate_action_result = validate_action_result  # type: ignore[method-assign]


def uninstall() -> None:
    """Puts Rasa's own method back."""
    global _RASAS_METHOD
    if _RASAS_METHOD is not None:
        RemoteAction._validate_action_result = _RASAS_METHOD  # type: ignore[method-assign]
        _RASAS_METHOD = None


__all__ = ["ValidationError", "install", "uninstall", "validate_action_result"]
