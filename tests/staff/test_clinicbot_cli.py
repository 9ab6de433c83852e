"""The clinicbot command line: exit codes and what staff read."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import List

import pytest
from staffkit import copy_project, fake_model, running_stand_in, snapshot

from staff import faq_data, retrain
from staff.cli import build_parser, main
from staff.history import History, data_fingerprint
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


# --- undoing edits: remove-example and restore-answer ------------------------------

TOPIC = "dry_needling"
NEW_EXAMPLE = "is needling done lying down"
SECOND = "Dry needling uses thin needles and no medication."
THIRD = "Dry needling uses thin needles only."


def test_remove_example_undoes_an_added_example(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(project)
    assert main(["faq", "add-example", TOPIC, NEW_EXAMPLE]) == 0
    capsys.readouterr()

    assert main(["faq", "remove-example", TOPIC, NEW_EXAMPLE]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"Removed {NEW_EXAMPLE!r} from faq/{TOPIC}."
    assert out.splitlines()[-1] == (
        "The assistant learns it at the next 'clinicbot retrain --publish'."
    )
    assert snapshot(project) == before


def test_remove_example_refuses_a_text_that_is_not_an_example(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(project)

    assert main(["faq", "remove-example", TOPIC, "never taught"]) == 1

    assert capsys.readouterr().err == (
        "Nothing was changed:\n  - 'never taught' is not an example of "
        "faq/dry_needling.\n"
    )
    assert snapshot(project) == before


def test_show_numbers_earlier_answers_and_restore_answer_brings_one_back(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    original = faq_data.get_topic(project, TOPIC).answers[0].text
    answers_file = project.faq_responses.read_bytes()
    assert main(["faq", "set-answer", TOPIC, SECOND]) == 0
    assert main(["faq", "set-answer", TOPIC, THIRD]) == 0
    capsys.readouterr()

    assert main(["faq", "show", TOPIC]) == 0
    shown = capsys.readouterr().out
    earlier = shown[shown.index("Earlier answers") :].splitlines()
    assert earlier[0] == (
        f"Earlier answers (2; bring one back with 'clinicbot faq restore-answer "
        f"{TOPIC} N'):"
    )
    assert re.fullmatch(r"  1\. replaced \d{4}-\d\d-\d\d \d\d:\d\d:\d\d:", earlier[1])
    assert earlier[2] == f"       {SECOND}"
    assert re.fullmatch(r"  2\. replaced .+:", earlier[3])
    assert " ".join(line.strip() for line in earlier[4:]) == original

    assert main(["faq", "restore-answer", TOPIC, "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"Restored an earlier answer of faq/{TOPIC}."
    assert project.faq_responses.read_bytes() == answers_file
    # The replaced answers stay available; without a number, the newest comes back.
    assert [e["text"] for e in faq_data.earlier_answers(project, TOPIC)] == [
        THIRD,
        SECOND,
    ]
    assert main(["faq", "restore-answer", TOPIC]) == 0
    assert faq_data.get_topic(project, TOPIC).answers[0].text == THIRD


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([TOPIC], "faq/dry_needling has no earlier answer to restore."),
        (["clinic_location"], "faq/clinic_location has no earlier answer to restore."),
        (["no_such_topic"], "There is no FAQ topic called 'no_such_topic'."),
    ],
)
def test_restore_answer_without_earlier_answers_is_refused(
    project: Project, capsys: pytest.CaptureFixture[str], args: List[str], reason: str
) -> None:
    before = snapshot(project)
    assert main(["faq", "restore-answer", *args]) == 1
    assert capsys.readouterr().err.startswith(f"Nothing was changed:\n  - {reason}")
    assert snapshot(project) == before


def test_restore_answer_refuses_a_number_it_did_not_show(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["faq", "set-answer", TOPIC, SECOND]) == 0
    capsys.readouterr()
    before = snapshot(project)

    assert main(["faq", "restore-answer", TOPIC, "2"]) == 1

    assert capsys.readouterr().err == (
        "Nothing was changed:\n  - faq/dry_needling has 1 earlier answer(s): give a "
        "number from 1 to 1 (see 'clinicbot faq show dry_needling').\n"
    )
    assert snapshot(project) == before


def test_the_rollback_advice_names_commands_that_exist() -> None:
    commands = re.findall(r"'(clinicbot [^']+)'", retrain.UNDO_ADVICE)
    assert len(commands) == 4, commands
    parser = build_parser()
    for command in commands:
        words = shlex.split(command.replace("TOPIC", TOPIC).replace(" N", " 1"))
        parser.parse_args(words[1:])  # exits 2 if clinicbot has no such command


def test_after_a_rollback_following_the_advice_makes_the_data_match_the_live_model(
    project: Project,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trained_before = data_fingerprint(project)
    files = {
        path: path.read_bytes() for path in (project.faq_nlu, project.faq_responses)
    }
    assert main(["faq", "add-example", TOPIC, NEW_EXAMPLE]) == 0
    assert main(["faq", "set-answer", TOPIC, SECOND]) == 0
    # Both models were published: the second was trained on the edits.
    history = History(project.models_dir / "history.json")
    history.published = ["baseline-1.tar.gz", "candidate-2.tar.gz"]
    history.live = "candidate-2.tar.gz"
    for name, model_id, data in (
        ("baseline-1.tar.gz", "old", trained_before),
        ("candidate-2.tar.gz", "new", data_fingerprint(project)),
    ):
        fake_model(project.models_dir / name, model_id)
        history.models[name] = {"model_id": model_id, "data_fingerprint": data}
    history.save()
    with running_stand_in() as rasa:
        rasa.model_id = "new"
        monkeypatch.setenv("RASA_URL", rasa.url)
        capsys.readouterr()

        assert main(["rollback"]) == 0
        advice = capsys.readouterr().out
        assert advice == (
            "baseline-1.tar.gz is live again; candidate-2.tar.gz was removed. The "
            f"data files still hold the edits it was trained on: {retrain.UNDO_ADVICE}"
            ", or they come back.\n"
        )
        assert rasa.model_id == "old"

        assert main(["faq", "remove-example", TOPIC, NEW_EXAMPLE]) == 0
        assert main(["faq", "restore-answer", TOPIC]) == 0
        capsys.readouterr()
        assert main(["retrain", "--publish"]) == 0

    assert capsys.readouterr().out == (
        "Nothing to do: the live model (baseline-1.tar.gz) was trained on exactly "
        "the current data.\n"
    )
    assert {path: path.read_bytes() for path in files} == files
    assert rasa.loaded == ["baseline-1.tar.gz"]
