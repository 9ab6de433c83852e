"""make run's supervision: the supervisord configuration, the systemd units, the API
token, the Rasa launcher and the health report.

The configuration is read back by supervisor's own parser, and the launcher's
argument by Rasa's own command line, so a change on either side fails here.
"""

from __future__ import annotations

import configparser
import shlex
import signal
import stat
import subprocess
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Dict, List

import pytest
from rasa.cli.arguments.run import add_server_arguments
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from scripts import api_token, rasa_server, supervise
from scripts.health import report, restarts_from_log
from scripts.supervise import HEALTH, PARTS, REMINDER_JOB, RETENTION_JOB, Part

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
INSTALL_ROOT = "/opt/valliant-clinic"


def environment(state: Path, **extra: str) -> Dict[str, str]:
    env = {
        "VENV": str(ROOT / ".venv"),
        "STATE_DIR": str(state),
        "RASA_PORT": "15005",
        "ACTION_PORT": "15055",
        "WEB_PORT": "18080",
        "STAFF_PORT": "18090",
        "HEALTH_PORT": "15006",
        "MODEL_PATH": str(state / "my models" / "clinic 100%.tar.gz"),
        "TRACKER_DB": str(state / "tracker.db"),
    }
    env.update(extra)
    return env


def load_config(tmp_path: Path, env: Dict[str, str]) -> ServerOptions:
    (Path(env["STATE_DIR"]) / "logs").mkdir(parents=True)  # as scripts/run.sh does
    path = tmp_path / "supervisord.conf"
    path.write_text(supervise.supervisord_config(env))
    options = ServerOptions()
    options.configfile = str(path)
    options.process_config(do_usage=False)
    return options


def programs(options: ServerOptions) -> Dict[str, object]:
    return {
        group.name: group.process_configs[0] for group in options.process_group_configs
    }


# --- the supervisord configuration ---------------------------------------------------


def test_config_runs_every_part_restarted_with_backoff_and_logs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = environment(state, STAFF_PASSWORD="a long staff password")
    options = load_config(tmp_path, env)
    found = programs(options)
    assert sorted(found) == [
        "action_server",
        "demo_page",
        "health",
        "rasa_server",
        "reminders",
        "retention",
        "staff_page",
    ]
    for name, program in found.items():
        assert program.autorestart is RestartUnconditionally  # type: ignore[attr-defined]
        assert program.startsecs == 5  # type: ignore[attr-defined]
        assert program.startretries >= 1000  # type: ignore[attr-defined]
        assert program.stopasgroup and program.killasgroup  # type: ignore[attr-defined]
        assert program.redirect_stderr  # type: ignore[attr-defined]
        log = state.resolve() / "logs" / f"{name}.log"
        assert program.stdout_logfile == str(log)  # type: ignore[attr-defined]
        assert program.stdout_logfile_maxbytes == 10 * 1024 * 1024  # type: ignore[attr-defined]
        assert program.stdout_logfile_backups == 5  # type: ignore[attr-defined]
        assert program.directory == str(ROOT)  # type: ignore[attr-defined]
    assert found["rasa_server"].stopwaitsecs == 30  # type: ignore[attr-defined]
    assert options.umask == 0o077
    assert options.nodaemon
    assert options.logfile == str(state.resolve() / "logs" / "supervisord.log")


def test_config_commands_survive_spaces_and_percent_signs(tmp_path: Path) -> None:
    env = environment(tmp_path / "state")
    found = programs(load_config(tmp_path, env))
    filename, argv = found["rasa_server"].make_process().get_execv_args()  # type: ignore[attr-defined]
    assert filename == str(ROOT / ".venv" / "bin" / "python")
    assert argv == [
        filename,
        "-m",
        "scripts.rasa_server",
        "run",
        "--interface",
        "127.0.0.1",
        "--port",
        "15005",
        "--model",
        env["MODEL_PATH"],  # "my models/clinic 100%.tar.gz", whole
        "--credentials",
        "credentials.yml",
        "--endpoints",
        "endpoints.yml",
        "--enable-api",
    ]
    assert not any("auth-token" in arg for arg in argv)


def test_config_without_staff_password_leaves_the_staff_page_out(
    tmp_path: Path,
) -> None:
    found = programs(load_config(tmp_path, environment(tmp_path / "state")))
    assert sorted(found) == [
        "action_server",
        "demo_page",
        "health",
        "rasa_server",
        "reminders",
        "retention",
    ]


def test_control_socket_is_a_private_unix_socket_in_the_state_dir(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    text = supervise.supervisord_config(environment(state))
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert "inet_http_server" not in parser.sections()  # never a TCP port
    assert parser["unix_http_server"]["file"] == str(
        state.resolve() / "supervisor.sock"
    )
    assert parser["unix_http_server"]["chmod"] == "0700"
    assert parser["supervisorctl"]["serverurl"] == (
        f"unix://{state.resolve() / 'supervisor.sock'}"
    )


def test_config_refuses_a_state_dir_too_long_for_a_socket(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set STATE_DIR to a shorter path"):
        supervise.supervisord_config(environment(tmp_path / ("x" * 120)))


def test_config_names_a_missing_variable(tmp_path: Path) -> None:
    env = environment(tmp_path)
    del env["RASA_PORT"]
    with pytest.raises(KeyError, match="RASA_PORT"):
        supervise.supervisord_config(env)


def test_env_file_for_systemd_quotes_values_and_keeps_the_token(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path, RASA_API_TOKEN="ab" * 32, CLINIC_CONFIG='say "hi"')
    lines = supervise.env_file(env).splitlines()
    assert 'RASA_PORT="15005"' in lines
    assert f'RASA_API_TOKEN="{"ab" * 32}"' in lines
    assert 'CLINIC_CONFIG="say \\"hi\\""' in lines
    assert 'ENDPOINTS="endpoints.yml"' in lines  # the Rasa server's unit names it
    assert not any(line.startswith("STAFF_PASSWORD=") for line in lines)  # unset


def test_summary_says_where_everything_is(tmp_path: Path) -> None:
    env = environment(tmp_path, STAFF_USERNAME="front-desk")
    text = supervise.summary(env, {"demo_page": True, "staff_page": False})
    logs = tmp_path.resolve() / "logs"
    assert text.splitlines()[1:] == [
        "The clinic assistant is running.",
        "  REST:  POST http://127.0.0.1:15005/webhooks/rest/webhook",
        "         e.g. curl -s -XPOST http://127.0.0.1:15005/webhooks/rest/webhook \\",
        """                -d '{"sender":"me","message":"What is a back spasm?"}'""",
        "  Chat in a terminal:  make chat   (in another terminal)",
        "  Website widget demo: http://127.0.0.1:18080/demo/",
        f"  Staff page:          not answering yet (see {logs}/staff_page.log)",
        "  Health of each part: http://127.0.0.1:15006/health",
        f"  Logs:                {logs}/ (supervisord.log: every start, exit and "
        "restart)",
        "  A part that stops is started again; see them with",
        f"    {env['VENV']}/bin/supervisorctl -c {tmp_path.resolve()}/"
        "supervisord.conf status",
        f"  Conversations are kept in {env['TRACKER_DB']}",
        "Press Ctrl-C to stop.",
    ]


# --- the systemd units: the same commands ---------------------------------------------


def unit_parts() -> List[Part]:
    return [*PARTS, HEALTH, RETENTION_JOB, REMINDER_JOB]


@pytest.mark.parametrize("part", unit_parts(), ids=lambda part: part.name)
def test_systemd_unit_runs_the_same_command_as_supervisord(part: Part) -> None:
    path = UNITS / f"valliant-{part.name.replace('_', '-')}.service"
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    assert unit.read(path) == [str(path)]
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    # systemd's ${VAR} is scripts/supervise.py's {VAR}; the install root is VENV's.
    template = [
        arg.replace(f"{INSTALL_ROOT}/.venv", "{VENV}").replace("${", "{")
        for arg in argv
    ]
    expected = list(part.command)
    if part is HEALTH:
        expected.append("--no-supervisor")  # systemd, not supervisord, runs the parts
    assert template == expected
    assert service["WorkingDirectory"] == INSTALL_ROOT
    assert service["EnvironmentFile"] == "/etc/valliant-clinic/clinic.env"
    assert service["Restart"] == "always"
    assert service["UMask"] == "0077"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    # What it runs exists: a script of the project or an importable module of it.
    program = argv[1:]
    if program[0] == "-m":
        module = ROOT / Path(*program[1].split("."))
        assert module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()
    elif argv[0].endswith("/python"):
        assert (ROOT / program[0]).is_file()
    else:
        assert (ROOT / ".venv" / "bin" / Path(argv[0]).name).is_file()


def test_every_unit_file_is_a_part() -> None:
    names = {f"valliant-{part.name.replace('_', '-')}.service" for part in unit_parts()}
    assert {path.name for path in UNITS.glob("*.service")} == names


# --- the API token ------------------------------------------------------------------


def test_new_tokens_are_hex_and_never_read_as_options() -> None:
    tokens = {api_token.new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert len(token) == 64
        assert int(token, 16) >= 0
        assert api_token.token_problem(token) is None


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "is empty"),
        ("-" + "a" * 40, 'starts with "-", which a command line reads as an option'),
        ("short", "must be at least 16 characters"),
        ("a" * 20 + " b", "must be at least 16 characters"),
        ("a" * 20 + "&x=1", "must be at least 16 characters"),
    ],
)
def test_bad_tokens_are_named(token: str, problem: str) -> None:
    found = api_token.token_problem(token)
    assert found is not None and found.startswith(problem)


def test_old_urlsafe_token_is_still_good() -> None:
    assert api_token.token_problem("Zx_9-" + "q" * 38) is None


def test_missing_token_is_made_and_kept_private(tmp_path: Path) -> None:
    token = api_token.api_token(tmp_path, {})
    path = tmp_path / "rasa_api_token"
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_token.api_token(tmp_path, {}) == token  # kept across starts


@pytest.mark.parametrize("saved", ["-" + "x" * 42, "", "\n", "has space" * 3])
def test_bad_saved_token_is_replaced_at_once_with_a_note(
    tmp_path: Path, saved: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rasa_api_token"
    path.write_text(saved)
    path.chmod(0o644)
    token = api_token.api_token(tmp_path, {})
    assert token != saved.strip()
    assert api_token.token_problem(token) is None
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 1
    assert note[0].startswith(f"note: the saved Rasa API token in {path} ")
    assert note[0].endswith("; replaced it with a new one.")
    assert token not in note[0]


def test_bad_token_in_the_environment_is_reported_not_changed(tmp_path: Path) -> None:
    with pytest.raises(api_token.TokenError, match="RASA_API_TOKEN starts with"):
        api_token.api_token(tmp_path, {"RASA_API_TOKEN": "-" + "a" * 30})
    assert not (tmp_path / "rasa_api_token").exists()


def test_token_in_the_environment_wins_and_is_not_saved(tmp_path: Path) -> None:
    given = "operator-token-0123456789"
    assert api_token.api_token(tmp_path, {"RASA_API_TOKEN": given}) == given
    assert not (tmp_path / "rasa_api_token").exists()


def test_staff_commands_find_the_saved_token(tmp_path: Path) -> None:
    from staff.project import Settings

    token = api_token.api_token(tmp_path, {})
    settings = Settings.from_env({"STATE_DIR": str(tmp_path)})
    assert settings.api_token == token


# --- the Rasa launcher ---------------------------------------------------------------


def test_launcher_adds_the_token_inside_the_process() -> None:
    token = "-" + "a" * 40  # even one a command line would misread, if it got one
    with pytest.raises(SystemExit, match="RASA_API_TOKEN starts with"):
        rasa_server.argv_with_token(["rasa", "run"], {"RASA_API_TOKEN": token})
    good = "b" * 64
    assert rasa_server.argv_with_token(
        ["rasa", "run", "--enable-api"], {"RASA_API_TOKEN": good}
    ) == ["rasa", "run", "--enable-api", f"--auth-token={good}"]


def test_launcher_refuses_a_token_on_its_command_line() -> None:
    with pytest.raises(SystemExit, match="not --auth-token"):
        rasa_server.argv_with_token(
            ["rasa", "run", "--auth-token", "x" * 20], {"RASA_API_TOKEN": "y" * 20}
        )


def test_launcher_refuses_to_start_without_a_token() -> None:
    with pytest.raises(SystemExit, match="RASA_API_TOKEN is empty"):
        rasa_server.argv_with_token(["rasa", "run"], {})


@pytest.mark.parametrize("token", ["c" * 64, "-dash-first-token-123456"])
def test_rasa_reads_the_launchers_token_argument_whole(token: str) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    args = parser.parse_args([f"--auth-token={token}", "--enable-api"])
    assert args.auth_token == token


def test_launcher_serves_the_published_model(tmp_path: Path) -> None:
    argv = ["rasa", "run", "--model", "models/clinic.tar.gz", "--enable-api"]
    published = tmp_path / "clinic-20261201.tar.gz"
    assert rasa_server.argv_with_model(argv, published) == [
        "rasa",
        "run",
        "--model",
        str(published),
        "--enable-api",
    ]
    assert rasa_server.argv_with_model(argv, None) == argv


# --- the health report ---------------------------------------------------------------

LOG = """\
2026-12-04 15:30:00,001 INFO supervisord started with pid 100
2026-12-04 15:30:01,002 INFO spawned: 'action_server' with pid 101
2026-12-04 15:30:05,000 INFO stopped: action_server (exit status 0)
2026-12-04 15:37:29,524 INFO supervisord started with pid 8368
2026-12-04 15:37:30,527 INFO spawned: 'action_server' with pid 8424
2026-12-04 15:37:30,554 INFO spawned: 'rasa_server' with pid 8427
2026-12-04 15:38:21,540 WARN exited: action_server (terminated by SIGKILL; not expected)
2026-12-04 15:38:22,057 INFO spawned: 'action_server' with pid 8781
2026-12-04 15:39:00,000 WARN exited: action_server (exit status 1; not expected)
2026-12-04 15:39:01,000 INFO spawned: 'action_server' with pid 8790
"""


def test_restarts_count_starts_after_the_first_of_this_supervisord() -> None:
    assert restarts_from_log(LOG, 8368) == {"action_server": 2, "rasa_server": 0}


def test_restarts_after_rotation_count_every_start_left() -> None:
    rotated = LOG.split("with pid 8427\n")[1]
    assert restarts_from_log(rotated, 8368) == {"action_server": 2}


def info(state: str, start: int = 1000, now: int = 1060) -> Dict[str, object]:
    return {"statename": state, "start": start, "now": now}


def test_report_ok_when_every_part_runs_and_answers() -> None:
    parts = list(PARTS[:3])
    code, body = report(
        parts,
        {part.name: True for part in parts},
        {part.name: info("RUNNING") for part in parts},
        {"action_server": 1},
    )
    assert code == 200
    assert body == {
        "status": "ok",
        "parts": {
            "action_server": {
                "state": "RUNNING",
                "uptime_s": 60,
                "restarts": 1,
                "ok": True,
            },
            "rasa_server": {
                "state": "RUNNING",
                "uptime_s": 60,
                "restarts": 0,
                "ok": True,
            },
            "demo_page": {
                "state": "RUNNING",
                "uptime_s": 60,
                "restarts": 0,
                "ok": True,
            },
        },
    }


@pytest.mark.parametrize(
    ("state", "answers"),
    [("BACKOFF", False), ("STARTING", True), ("RUNNING", False), ("FATAL", False)],
)
def test_report_degraded_while_a_part_is_down(state: str, answers: bool) -> None:
    parts = list(PARTS[:2])
    code, body = report(
        parts,
        {"action_server": answers, "rasa_server": True},
        {"action_server": info(state), "rasa_server": info("RUNNING")},
        {},
    )
    assert code == 503
    assert body["status"] == "degraded"
    assert body["parts"]["action_server"]["state"] == state
    assert body["parts"]["rasa_server"]["ok"] is True


def test_report_without_supervisord_answering_is_degraded() -> None:
    parts = list(PARTS[:1])
    code, body = report(parts, {"action_server": True}, {}, {})
    assert (code, body["parts"]["action_server"]["state"]) == (503, "UNKNOWN")


def test_report_under_systemd_has_the_checks_only() -> None:
    parts = list(PARTS[:2])
    code, body = report(parts, {"action_server": True, "rasa_server": True}, None, {})
    assert code == 200
    assert body["parts"]["rasa_server"] == {
        "state": None,
        "uptime_s": None,
        "restarts": None,
        "ok": True,
    }


# --- a crash loop, under the real supervisord -----------------------------------------


def test_a_part_that_keeps_crashing_backs_off_and_is_retried(tmp_path: Path) -> None:
    # Every part's program exits at once: supervisord must keep trying, with growing
    # pauses (BACKOFF), never giving up (FATAL) after a few tries.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "rasa"):
        program = venv / "bin" / name
        program.write_text("#!/bin/sh\nexit 3\n")
        program.chmod(0o755)
    state = tmp_path / "s"
    env = environment(state, VENV=str(venv))
    (state / "logs").mkdir(parents=True)
    config = state / "supervisord.conf"
    config.write_text(supervise.supervisord_config(env))
    supervisord = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "supervisord"), "-n", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(7.5)  # spawns at about 0, 1, 3 and 6 s
        status = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(config)]
            + ["status", "action_server"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    finally:
        supervisord.send_signal(signal.SIGTERM)
        supervisord.wait(timeout=30)
    assert status.split()[:2] == ["action_server", "BACKOFF"]
    log = (state / "logs" / "supervisord.log").read_text()
    spawned = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.splitlines()
        if "spawned: 'action_server'" in line
    ]
    assert len(spawned) >= 3
    pauses = [(b - a).total_seconds() for a, b in pairwise(spawned)]
    assert pauses == sorted(pauses) and pauses[-1] - pauses[0] >= 1.5, pauses
    assert "gave up: action_server" not in log


def test_launcher_serves_a_model_of_elsewhere_as_given(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert rasa_server.in_models_dir(
        ["rasa", "run", "--model", str(models / "clinic.tar.gz")], models
    )
    assert not rasa_server.in_models_dir(
        ["rasa", "run", "--model", str(tmp_path / "bench" / "stock.tar.gz")], models
    )
    assert not rasa_server.in_models_dir(["rasa", "run", "--model"], models)


def test_tests_and_benchmarks_run_make_runs_commands(tmp_path: Path) -> None:
    from scripts.launcher import Servers

    model = tmp_path / "clinic.tar.gz"
    model.write_bytes(b"")
    servers = Servers(tmp_path, model, {"VENV": "/opt/venv"})
    env = servers.env
    parts = {part.name: part for part in PARTS}
    assert servers.rasa.argv == parts["rasa_server"].argv(env)
    assert servers.actions.argv == parts["action_server"].argv(env)
    assert servers.rasa.argv == [
        "/opt/venv/bin/python", "-m", "scripts.rasa_server", "run",
        "--interface", "127.0.0.1", "--port", str(servers.rasa_port),
        "--model", str(model), "--credentials", "credentials.yml",
        "--endpoints", "endpoints.yml", "--enable-api",
    ]  # fmt: skip
    # The token is in the environment only: a command line is visible in ps.
    assert api_token.token_problem(env["RASA_API_TOKEN"]) is None
    assert not any(env["RASA_API_TOKEN"] in arg for arg in servers.rasa.argv)
    assert env["ACTION_SERVER_URL"] == (
        f"http://127.0.0.1:{servers.action_port}/webhook"
    )
    assert servers.rasa_port != servers.action_port
