"""The running Rasa server's HTTP API: the live model, and turns started from outside.

``POST /conversations/{id}/trigger_intent`` starts a turn the patient did not
(an appointment reminder, staff/reminders.py).

``PUT /model`` loads the new model while the old one keeps answering, then swaps
them, so publishing needs no restart. The server must run with ``--enable-api
--auth-token``; without a token Rasa leaves the whole API open, so this client
refuses to work without one. The token travels as a query parameter (Rasa's token
auth); error messages never repeat the URL with it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

STATUS_TIMEOUT = 10.0
# Loading a model (spaCy, the sentence encoder) takes seconds; on a busy machine more.
LOAD_TIMEOUT = 300.0


class ApiError(Exception):
    """The assistant's API could not do what was asked; the message says why."""


@dataclass(frozen=True)
class RasaApi:
    """A client of one Rasa server."""

    url: str
    token: Optional[str]

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]],
        timeout: float,
        query: Optional[Dict[str, str]] = None,
    ) -> Any:
        if not self.token:
            raise ApiError(
                "No API token: set RASA_API_TOKEN to the token the assistant was "
                "started with (scripts/run.sh keeps it in $STATE_DIR/rasa_api_token)."
            )
        arguments = urllib.parse.urlencode({**(query or {}), "token": self.token})
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}{path}?{arguments}",
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            raise ApiError(self._explain(error.code, _message(error))) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(
                f"The assistant does not answer at {self.url} ({reason}). Is it "
                "running (make run)?"
            ) from None
        return json.loads(payload) if payload else None

    def _explain(self, code: int, message: str) -> str:
        if code in (401, 403):
            return (
                "The assistant refused the API token. RASA_API_TOKEN must be the "
                "token it was started with (scripts/run.sh keeps it in "
                "$STATE_DIR/rasa_api_token)."
            )
        if code in (404, 405):
            return (
                f"The assistant at {self.url} has its HTTP API turned off: "
                "scripts/run.sh must start it with --enable-api --auth-token."
            )
        return f"The assistant answered {code}: {message}"

    def status(self) -> Dict[str, Any]:
        """``GET /status``: the live model's file name and id."""
        result = self._request("GET", "/status", None, STATUS_TIMEOUT)
        return result if isinstance(result, dict) else {}

    def live_model_id(self) -> str:
        """The id of the model the assistant answers with now."""
        model_id = self.status().get("model_id")
        if not model_id:
            raise ApiError("The assistant has no model loaded.")
        return str(model_id)

    def load_model(self, model: Path, timeout: float = LOAD_TIMEOUT) -> None:
        """``PUT /model``: makes ``model`` live; the old one answers until then."""
        try:
            self._request(
                "PUT", "/model", {"model_file": str(model.resolve())}, timeout
            )
        except ApiError as error:
            raise ApiError(
                f"The assistant could not load {model.name}: {error} The model "
                "that was live is still live."
            ) from None

    def trigger_intent(
        self,
        conversation_id: str,
        intent: str,
        entities: Dict[str, str],
        output_channel: str,
        timeout: float = STATUS_TIMEOUT,
    ) -> None:
        """``POST /conversations/{id}/trigger_intent``: an external event.

        The conversation's predicted actions run and their messages go out through
        ``output_channel`` (the input channel of that name must provide one).
        Error messages name no conversation (an id may be a phone number).
        """
        # Rasa (Sanic) does not decode the path: a "+" is sent as it is.
        path = "/conversations/" + urllib.parse.quote(conversation_id, safe="+")
        self._request(
            "POST",
            f"{path}/trigger_intent",
            {"name": intent, "entities": entities},
            timeout,
            {"output_channel": output_channel},
        )


def _message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read().decode("utf-8"))
    except (ValueError, OSError):
        return str(error.reason)
    return str(body.get("message") or error.reason) if isinstance(body, dict) else ""
