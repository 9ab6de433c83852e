"""The settings loader: defaults written once, bad values named, used everywhere."""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Dict

import pytest
from testkit import PROJECT_PACKAGES, PROJECT_ROOT

from clinic_common import settings
from clinic_common.settings import Settings, SettingsError, load

ROOT = Path("/srv/clinic")


def test_defaults_follow_the_project_root_and_the_state_folder() -> None:
    config = load({"PROJECT_ROOT": str(ROOT)})

    assert config.state_dir == ROOT / "var"
    assert config.scheduler_db == ROOT / "var" / "scheduler.db"
    assert config.callback_db == ROOT / "var" / "callbacks.db"
    assert config.channel_db == ROOT / "var" / "channels.db"
    assert config.tracker_db == ROOT / "var" / "tracker.db"
    assert config.model_path == ROOT / "models" / "clinic.tar.gz"
    assert config.clinic_config == PROJECT_ROOT / "clinic.yml"
    assert config.scheduler_backend == "sqlite"
    ports = (config.rasa_port, config.action_port, config.web_port)
    assert ports == (5005, 5055, 8080)
    assert (config.staff_port, config.health_port) == (8090, 5006)
    assert config.rasa_url == "http://127.0.0.1:5005"
    assert config.action_server_url == "http://127.0.0.1:5055/webhook"
    assert config.widget_allowed_origins == (
        "http://127.0.0.1:8080",
        "http://localhost:8080",
    )
    assert config.action_server_timeout == 15
    assert config.sms_retry_window_seconds == 3600
    assert config.rasa_api_token is None
    assert (config.staff_username, config.staff_password) == ("staff", "")
    assert config.min_heldout_accuracy == 0.9
    assert config.scheduler_timeout == 5
    assert (config.fhir_base_url, config.fhir_auth_token) == ("", None)
    assert (config.scheduler_webhook_url, config.scheduler_webhook_secret) == ("", "")


def test_without_a_project_root_the_code_is_the_project() -> None:
    assert load({}).state_dir == PROJECT_ROOT / "var"


def test_values_set_win_and_derived_defaults_follow_them() -> None:
    config = load(
        {
            "STATE_DIR": "/data/state",
            "CALLBACK_DB": "/elsewhere/cb.db",
            "RASA_PORT": "6005",
            "ACTION_PORT": "6055",
            "WEB_PORT": "9000",
            "SCHEDULER_BACKEND": " FHIR ",
            "WIDGET_ALLOWED_ORIGINS": " https://a.example , ,https://b.example",
            "STAFF_PASSWORD": " secret with spaces ",
            "FHIR_SCHEDULE_IDS": " a , ,b ",
        }
    )

    assert config.scheduler_db == Path("/data/state/scheduler.db")
    assert config.callback_db == Path("/elsewhere/cb.db")
    assert config.rasa_url == "http://127.0.0.1:6005"
    assert config.action_server_url == "http://127.0.0.1:6055/webhook"
    assert config.scheduler_backend == "fhir"
    assert config.widget_allowed_origins == ("https://a.example", "https://b.example")
    assert config.staff_password == " secret with spaces "
    assert config.fhir_schedule_ids == ("a", "b")


def test_an_empty_variable_counts_as_unset() -> None:
    empty = {field.name.upper(): "" for field in fields(Settings)}
    assert load(empty) == load({})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RASA_PORT", "http"),
        ("ACTION_PORT", "0"),
        ("WEB_PORT", "65536"),
        ("STAFF_PORT", "-1"),
        ("HEALTH_PORT", "50.5"),
        ("MIN_HELDOUT_ACCURACY", "90%"),
        ("MIN_HELDOUT_ACCURACY", "1.5"),
        ("MIN_HELDOUT_ACCURACY", "nan"),
        ("SCHEDULER_TIMEOUT", "soon"),
        ("SCHEDULER_TIMEOUT", "0"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is '{re.escape(value)}'"):
        load({name: value})


@pytest.mark.parametrize(
    ("name", "default"),
    [("ACTION_SERVER_TIMEOUT", 15.0), ("SMS_RETRY_WINDOW_SECONDS", 3600.0)],
)
@pytest.mark.parametrize("bad", ["soon", "0", "-5", "inf"])
def test_a_bad_timeout_is_logged_and_the_default_used(
    name: str, default: float, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    attribute = name.lower()
    assert getattr(load({name: "2.5"}), attribute) == 2.5
    with caplog.at_level(logging.ERROR, logger="clinic_common"):
        assert getattr(load({name: bad}), attribute) == default
    assert caplog.messages == [
        f"{name} must be a positive number of seconds; using {default:g}."
    ]


def exported_by_env_sh(environ: Dict[str, str]) -> Dict[str, str]:
    """The environment after ``source scripts/env.sh`` in a shell given ``environ``."""
    script = f'source "{PROJECT_ROOT}/scripts/env.sh" && env -0'
    output = subprocess.run(
        ["bash", "-c", script], env=environ, check=True, capture_output=True
    ).stdout.decode()
    return dict(item.split("=", 1) for item in output.split("\0") if item)


def test_env_sh_writes_the_same_defaults_as_the_loader(tmp_path: Path) -> None:
    shell = exported_by_env_sh({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert Path(shell["PROJECT_ROOT"]) == PROJECT_ROOT

    # Whatever env.sh exports must change nothing the loader would decide alone.
    assert load(shell) == load({"PROJECT_ROOT": shell["PROJECT_ROOT"]})
    assert {"RASA_PORT", "STATE_DIR", "TRACKER_DB", "ACTION_SERVER_URL"} <= set(shell)


def test_env_sh_keeps_values_already_set(tmp_path: Path) -> None:
    given = {"STATE_DIR": str(tmp_path / "s"), "RASA_PORT": "7005"}
    shell = exported_by_env_sh({"PATH": "/usr/bin:/bin", **given})

    assert load(shell).tracker_db == tmp_path / "s" / "tracker.db"
    assert shell["RASA_PORT"] == "7005"


# Code that reads one of the loader's variables itself, from ``os.environ`` or from
# an ``environ`` mapping it was given, bypassing the loader; or that keeps a
# variable's name in a module constant, the way to read it by that constant.
DIRECT_READ = re.compile(
    r"(?:\benviron\.get|os\.getenv|\benviron\[)\(?\s*['\"](\w+)"
    r"|^\w+ = ['\"](\w+)['\"]$",
    re.MULTILINE,
)


def test_no_module_reads_the_loaders_variables_itself() -> None:
    names = {field.name.upper() for field in fields(Settings)}
    readers = {
        f"{path.relative_to(PROJECT_ROOT)}: {name}"
        for folder in PROJECT_PACKAGES
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        for read in DIRECT_READ.findall(path.read_text(encoding="utf-8"))
        for name in read
        if name in names
    }
    assert readers == set()


def test_the_secrets_are_not_shown() -> None:
    secrets = {"FHIR_AUTH_TOKEN": "t0ken", "SCHEDULER_WEBHOOK_SECRET": "s3cret"}
    shown = repr(load(secrets))
    assert "t0ken" not in shown and "s3cret" not in shown


def test_the_retrieval_intent_is_named_once() -> None:
    from staff import project

    assert project.RETRIEVAL_INTENT is settings.RETRIEVAL_INTENT == "faq"
    definitions = {
        str(path.relative_to(PROJECT_ROOT))
        for folder in PROJECT_PACKAGES
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if re.search(r"^RETRIEVAL_INTENT\b.*=", path.read_text(), re.M)
    }
    assert definitions == {"clinic_common/settings.py"}
