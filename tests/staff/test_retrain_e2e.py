"""Staff retrain end to end, with the real action server and Rasa server running.

The servers run throughout, on free loopback ports, with Rasa's HTTP API enabled
behind a token, on a temporary copy of the project's data and of the trained model:
the repository's own files are never edited. The staff command runs as staff run it,
in its own process.

1. A phrasing the live assistant gets wrong is found in ``clinicbot missed``, added as
   an example, retrained and published while patients keep talking to the assistant
   (no request may fail); the same phrasing is then answered right over REST.
   ``clinicbot rollback`` brings the previous model back.
2. A bad edit (dry needling questions filed under chiropractic care) passes the edit
   checks but fails the retrain gate; the live model is untouched.

Timings are printed (run with ``-s`` to see them), not asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from staffkit import copy_project
from testkit import post_rest

from scripts.launcher import Servers
from staff.history import History, model_id_of
from staff.missed import group_id
from staff.project import CODE_ROOT, Project
from staff.rasa_api import RasaApi

pytestmark = pytest.mark.integration

# Phrasings the model of 2026-11-26 does not answer ("Did you mean" instead), with
# the topic they ask about; the first one the live model gets wrong is used. They
# belong to topics with no held-out question near the confidence thresholds: with
# 4 to 7 held-out questions per label, the default tolerance (0.10) lets no label
# lose a single one, and an example near a borderline question can flip it.
CANDIDATES = [
    ("should i see a bone cracker too", "chiropractic_care"),
    ("will the stuff in the needle knock me out", "injection_contents"),
    ("does the numbing shot put you to sleep", "injection_contents"),
]
# Questions about dry needling, filed under the wrong topic: close paraphrases of the
# held-out dry needling questions, so the gate must see that label drop.
BAD_EDIT = [
    "can the needling be done with zero medication at all",
    "i'd rather not have any drugs injected, is there some other way",
    "how is dry needle therapy different",
    "how does dry needling differ from what an acupuncturist does",
    "any option that skips the steroid and the numbing stuff",
    "can you do the needle with nothing at all in it",
    "needle but with no medicine in it",
    "dry needling instead of a shot with drugs",
]


class Served:
    """The assistant on a copy of the project, and the staff command for it."""

    def __init__(self, tmp: Path) -> None:
        self.project: Project = copy_project(tmp / "project")
        source = Path(os.environ.get("MODEL_PATH", CODE_ROOT / "models/clinic.tar.gz"))
        self.model = self.project.models_dir / "clinic.tar.gz"
        self.model.parent.mkdir(parents=True)
        shutil.copy2(source, self.model)
        if model_id_of(self.model) is None:
            raise RuntimeError(f"No trained model at {source}: run 'make train'.")
        self.state = self.project.root / "var"
        self.state.mkdir(mode=0o700)
        # Rasa's own REST channel: this test is about the model, not the channels.
        (self.project.root / "credentials.yml").write_text("rest:\n")
        shutil.copy2(CODE_ROOT / "endpoints.yml", self.project.root / "endpoints.yml")
        started = time.monotonic()
        # The Rasa server runs in the copy (its credentials.yml and endpoints.yml),
        # with the token in its environment (scripts/launcher.py).
        self.servers = Servers(
            self.state,
            self.model,
            {
                **os.environ,
                "PROJECT_ROOT": str(self.project.root),
                "SCHEDULER_BACKEND": "sqlite",
                "SCHEDULER_DB": str(self.state / "scheduler.db"),
                "MIN_HELDOUT_ACCURACY": "0.90",
            },
            rasa_cwd=self.project.root,
            log_dir=self.project.root,
        ).start()
        self.env = self.servers.env
        self.token = self.servers.token
        self.rasa_port = self.servers.rasa_port
        self.api = RasaApi(self.servers.url, self.token)
        print(f"\nservers ready in {time.monotonic() - started:.1f} s")

    def clinicbot(self, *args: str, timeout: float = 60) -> Tuple[int, str, str]:
        """Runs the staff command as staff do; returns (exit code, stdout, stderr)."""
        result = subprocess.run(
            [sys.executable, "-m", "staff", *args],
            cwd=CODE_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.returncode, result.stdout, result.stderr

    def post(self, sender: str, message: str) -> Tuple[int, Any]:
        body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
        return post_rest(self.rasa_port, body, timeout=120)

    def texts(self, message: str) -> List[str]:
        status, replies = self.post(f"e2e-{uuid.uuid4().hex[:8]}", message)
        assert status == 200 and replies, (status, replies)
        return [str(reply.get("text", "")) for reply in replies]

    def answers(self) -> Dict[str, str]:
        responses = yaml.safe_load(self.project.faq_responses.read_text())["responses"]
        return {name.split("/", 1)[1]: v[-1]["text"] for name, v in responses.items()}

    def close(self) -> None:
        self.servers.close()


class Patients(threading.Thread):
    """Keeps asking a question over REST, recording every status and latency."""

    def __init__(self, served: Served) -> None:
        super().__init__(daemon=True)
        self.served = served
        self.done = threading.Event()
        self.results: List[Tuple[int, float, bool]] = []

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            try:
                status, replies = self.served.post("patient-load", "what is a spasm")
            except OSError:
                status, replies = 0, None
            self.results.append((status, time.monotonic() - began, bool(replies)))
            time.sleep(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=180)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = Served(tmp_path_factory.mktemp("staff-e2e"))
    try:
        yield running
    finally:
        running.close()


def step_lines(output: str) -> List[str]:
    return [line for line in output.splitlines() if line.startswith("[")]


def test_a_missed_phrasing_is_taught_and_goes_live_without_downtime(
    served: Served,
) -> None:
    answers = served.answers()
    wrong = [
        (t, topic) for t, topic in CANDIDATES if answers[topic] not in served.texts(t)
    ]
    assert wrong, "the live model answers every candidate: add harder ones"
    phrasing, topic = wrong[0]
    original_id = served.api.live_model_id()

    code, listed, _ = served.clinicbot("missed")
    assert code == 0 and phrasing in listed, listed
    identifier = group_id(phrasing)
    assert identifier in listed

    began = time.monotonic()
    code, out, err = served.clinicbot("missed", "add", identifier, topic)
    assert code == 0, err
    patients = Patients(served)
    patients.start()
    try:
        code, out, err = served.clinicbot("retrain", "--publish", timeout=900)
    finally:
        patients.stop()
    assert code == 0, out + err
    right_after = served.texts(phrasing)
    add_to_live = time.monotonic() - began

    print("\n".join(step_lines(out)))
    benchmark = [line for line in out.splitlines() if line.startswith("Benchmark:")]
    print(benchmark[0] if benchmark else "no benchmark line")
    latencies = [latency for _, latency, _ in patients.results]
    print(
        f"e2e: 'missed add' to right answer over REST {add_to_live:.1f} s; "
        f"{len(latencies)} patient requests during the retrain, slowest "
        f"{max(latencies):.1f} s"
    )
    for step in ("validate", "train", "held-out", "stories", "publish"):
        assert any(f" {step}: ok (" in line for line in step_lines(out)), step
    assert benchmark and "training" in benchmark[0]
    assert answers[topic] in right_after
    assert all(status == 200 and replied for status, _, replied in patients.results)
    assert len(patients.results) > 10

    history = History.load(served.project.models_dir)
    assert history.live and history.live.startswith("candidate-")
    assert served.api.live_model_id() == model_id_of(history.file(history.live))
    assert served.clinicbot("live-model")[1].strip() == str(history.file(history.live))
    assert served.token not in (served.project.root / "rasa.log").read_text()

    code, out, err = served.clinicbot("rollback")
    assert code == 0, err
    assert served.api.live_model_id() == original_id
    assert answers[topic] not in served.texts(phrasing)


def test_a_bad_edit_fails_the_gate_and_the_live_model_stays(served: Served) -> None:
    live_before = served.api.live_model_id()
    nlu_before = served.project.faq_nlu.read_text()
    history_file = served.project.models_dir / "history.json"
    history_before = (
        json.loads(history_file.read_text()).get("live")
        if (history_file.is_file())
        else None
    )
    dry_needling = served.answers()["dry_needling"]
    try:
        code, _, err = served.clinicbot(
            "faq", "add-example", "chiropractic_care", *BAD_EDIT
        )
        assert code == 0, err  # the edit itself breaks no rule

        code, out, err = served.clinicbot("retrain", "--publish", timeout=900)
        print("\n" + "\n".join(step_lines(out)))
        print(err)
        assert code == 1
        assert "3/5 held-out: FAILED" in out
        assert err.startswith("Nothing was published.")
        assert "faq/dry_needling" in err
        assert served.api.live_model_id() == live_before
        assert json.loads(history_file.read_text()).get("live") == history_before
        assert list(served.project.models_dir.glob("candidate-*")) == [
            path
            for path in served.project.models_dir.glob("candidate-*")
            if path.name == history_before
        ]
        assert dry_needling in served.texts("tell me about dry needling")
    finally:
        served.project.faq_nlu.write_text(nlu_before)
