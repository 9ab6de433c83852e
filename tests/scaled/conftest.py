"""The scaled profile's fixtures: the Debian packages, a Twilio fake, a running profile.

Each test module gets its own profile (two Rasa servers, one action server,
PostgreSQL, Redis and nginx; about 20 s to start). The model is $MODEL_PATH
(scripts/train.sh). The state folder is made outside pytest's temporary folders:
PostgreSQL and Redis run under their own accounts when root and must reach it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from scripts.launcher import LOOPBACK, ROOT, free_port
from scripts.run_scaled import DATABASE, DB_USER, Options, ScaledProfile
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.conftest import (
    SMS_ACCOUNT_SID,
    SMS_AUTH_TOKEN,
    SMS_FROM_NUMBER,
    SMS_PUBLIC_URL,
    SMS_UNSET,
    sms_env,
)

STAFF_PASSWORD = "scaled-profile-staff-password"


def install_services() -> None:
    """Installs the Debian packages, or skips the module saying why it could not."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install_services.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"the scaled profile's Debian packages: {done.stderr.strip()}")


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(SMS_ACCOUNT_SID, SMS_AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def profile(twilio: FakeTwilioApi) -> Iterator[ScaledProfile]:
    install_services()
    state = Path(tempfile.mkdtemp(prefix="scaled-"))
    port = free_port()
    options = Options(
        rasa_servers=2,
        action_servers=1,
        port=port,
        listen=LOOPBACK,
        public_url=f"http://{LOOPBACK}:{port}",
        staff_port=free_port(taken=(port,)),
    )
    env = {
        **SMS_UNSET,
        **os.environ,
        **sms_env(twilio),
        "SCHEDULER_BACKEND": "sqlite",
        "STAFF_PASSWORD": STAFF_PASSWORD,
        "WIDGET_ALLOWED_ORIGINS": "",
    }
    for name in (
        "STATE_DIR",
        "TRACKER_DB",
        "SCHEDULER_DB",
        "CALLBACK_DB",
        "CHANNEL_DB",
        "ENDPOINTS",
    ):
        env.pop(name, None)  # all follow the state folder or the profile
    model = Path(os.environ.get("MODEL_PATH", ROOT / "models" / "clinic.tar.gz"))
    running = ScaledProfile(state, model, options, env)
    try:
        with running:
            yield running
    finally:
        shutil.rmtree(state, ignore_errors=True)


def status_of(url: str, data: Optional[bytes] = None, **headers: str) -> int:
    """The HTTP status ``url`` answers with (GET, or POST with ``data``)."""
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def post_sms(base_url: str, phone: str, text: str, signature: str = "valid") -> int:
    """Posts an SMS as Twilio would to ``base_url``'s webhook; the HTTP status.

    ``signature`` is "valid" (signed for the public URL, which every server checks
    against), or the header's value as is.
    """
    form = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "From": phone,
        "To": SMS_FROM_NUMBER,
        "Body": text,
        "NumMedia": "0",
    }
    if signature == "valid":
        signature = RequestValidator(SMS_AUTH_TOKEN).compute_signature(
            SMS_PUBLIC_URL, form
        )
    return status_of(
        f"{base_url}/webhooks/twilio/webhook",
        urllib.parse.urlencode(form).encode(),
        **{"X-Twilio-Signature": signature},
    )


def stored_events(profile: ScaledProfile, senders: List[str]) -> List[Tuple[str, ...]]:
    """(sender, type, event JSON) of every stored event of ``senders``, in order."""
    engine = sa.create_engine(
        profile.postgres.url(DATABASE, DB_USER, profile.env["POSTGRES_PASSWORD"])
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT sender_id, type_name, data FROM events "
                    "WHERE sender_id IN :senders ORDER BY id"
                ).bindparams(sa.bindparam("senders", expanding=True)),
                {"senders": senders},
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()
