"""The clinicbot command line: exit codes and what staff read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from staffkit import copy_project, snapshot

from staff.cli import main
from staff.project import CODE_ROOT, Project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    copy = copy_project(tmp_path / "project")
    monkeypatch.setenv("PROJECT_ROOT", str(copy.root))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRACKER_DB", str(tmp_path / "state" / "tracker.db"))
    monkeypatch.setenv("MODEL_PATH", str(copy.models_dir / "clinic.tar.gz"))
    monkeypatch.setenv("RASA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("RASA_API_TOKEN", "test-token")
    return copy


def test_faq_list_shows_every_topic(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["faq", "list"]) == 0
    out = capsys.readouterr().out
    assert "dry_needling" in out and "Dry needling (no medication)" in out
    assert out.rstrip().endswith("12 topics.")


def test_add_example_then_show(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["faq", "add-example", "dry_needling", "needle with no meds?"]) == 0
    assert "Added 1 example(s) to faq/dry_needling." in capsys.readouterr().out

    assert main(["faq", "show", "dry_needling"]) == 0
    assert "  - needle with no meds?" in capsys.readouterr().out


def test_a_refusal_exits_1_says_why_and_writes_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(project)

    code = main(["faq", "add-example", "dry_needling", "hi there", "ok?"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Nothing was changed:\n")
    assert "'hi there' is already an example of greet" in err
    assert snapshot(project) == before


def test_new_topic_asks_for_five_examples(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["faq", "new", "parking_info", "--title", "Parking", "--answer", "Free."]
    code = main([*args, "--example", "where do i park"])
    assert code == 1
    assert "at least 5 examples (you gave 1)" in capsys.readouterr().err


def test_missed_without_conversations(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["missed", "--since", "7"]) == 0
    assert "No missed messages in the last 7 days." in capsys.readouterr().out


def test_retrain_publish_needs_the_running_assistant(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", "--publish"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Nothing was published. Cannot publish: The assistant")
    assert "Nothing was trained." in err


def test_live_model_is_empty_before_any_publish(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["live-model"]) == 1
    assert capsys.readouterr().out == ""


def test_bad_usage_exits_2(project: Project) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["retrain", "--tolerance", "5"])
    assert exit_.value.code == 2


def test_the_script_runs_in_the_venv_on_the_project() -> None:
    result = subprocess.run(
        [str(CODE_ROOT / "scripts" / "clinicbot"), "faq", "show", "dry_needling"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Topic:  dry_needling\n")
