"""Helpers of the staff tool tests: a temporary copy of the project's data files.

The tests edit the copy, never the repository's own files. (No ``__init__.py`` in this
folder: as a package it would be called ``staff`` and hide the real one.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlparse

from staff.history import model_id_of
from staff.project import CODE_ROOT, Project, Settings

TOKEN = "test-token"

DATA_PATHS = (
    "config.yml",
    "endpoints.yml",
    "domain.yml",
    "data",
    "data_validation",
    "tests/nlu_heldout",
    "tests/stories",
    "tests/stories_known_nlu_misses",
    "actions/faq_titles.yml",
)


def copy_project(destination: Path) -> Project:
    """Copies the data files a staff command reads or writes into ``destination``."""
    for relative in DATA_PATHS:
        source, target = CODE_ROOT / relative, destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return Project(destination)


def settings_for(
    project: Project,
    state_dir: Path,
    rasa_url: str = "http://127.0.0.1:9",
    api_token: Optional[str] = TOKEN,
    min_accuracy: float = 0.9,
) -> Settings:
    """Settings of a test: its own state folder, tracker store and model path."""
    return Settings(
        project=project,
        state_dir=state_dir,
        tracker_db=state_dir / "tracker.db",
        model_path=project.models_dir / "clinic.tar.gz",
        rasa_url=rasa_url,
        api_token=api_token,
        min_heldout_accuracy=min_accuracy,
    )


def snapshot(project: Project) -> Dict[str, str]:
    """A hash of every file under the copy, to show a refused edit wrote nothing."""
    return {
        str(path.relative_to(project.root)): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in sorted(project.root.rglob("*"))
        if path.is_file() and ".lock" not in path.name
    }


def comment_lines(path: Path) -> list[str]:
    """The comment lines of a YAML file, in order."""
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("#")
    ]


# --- models and a stand-in for the Rasa server's API ----------------------------


def fake_model(path: Path, model_id: str) -> Path:
    """A model archive with only the metadata Rasa writes (enough to be identified)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"model_id": model_id}).encode("utf-8")
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


class RasaStandIn(ThreadingHTTPServer):
    """Serves GET /status and PUT /model with a token, like rasa/server.py."""

    def __init__(self, api_enabled: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.api_enabled = api_enabled
        self.model_id = "initial"
        self.loaded: List[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StandInHandler(BaseHTTPRequestHandler):
    server: RasaStandIn

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Optional[Dict[str, Any]] = None) -> None:
        data = json.dumps(body).encode("utf-8") if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        query = parse_qs(urlparse(self.path).query)
        if not self.server.api_enabled:
            self._reply(404, {"message": "Requested URL not found"})
            return False
        if query.get("token") != [TOKEN]:
            self._reply(401, {"message": "User is not authenticated."})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self._authorised():
            self._reply(200, {"model_id": self.server.model_id, "model_file": "x"})

    def do_PUT(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        length = int(self.headers["Content-Length"])
        model = Path(json.loads(self.rfile.read(length))["model_file"])
        model_id = model_id_of(model)
        if model_id is None:
            self._reply(
                400, {"message": f"Agent with name '{model}' could not be loaded."}
            )
            return
        self.server.model_id = model_id
        self.server.loaded.append(model.name)
        self._reply(204)


@contextlib.contextmanager
def running_stand_in() -> Iterator[RasaStandIn]:
    """A :class:`RasaStandIn` serving on a free loopback port until the block ends."""
    server = RasaStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
