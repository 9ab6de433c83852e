"""The rooms of docs/architecture.md and what each may import, checked on the source.

A new import that crosses a wall (the Rasa server importing the action server's
package, the scheduler importing Rasa, ...) fails here with the file and the line,
instead of being found later as a slow start-up or an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Tuple

import pytest
from testkit import PROJECT_PACKAGES as PROJECT

ROOT = Path(__file__).resolve().parents[1]

FRAMEWORKS = frozenset({"rasa", "rasa_sdk"})

# Each room and the project packages and frameworks it may import: the table of
# docs/architecture.md. Anything not named here (the standard library, PyYAML,
# SQLAlchemy, ...) is free.
MAY_IMPORT: Dict[str, FrozenSet[str]] = {
    "clinic_common": frozenset(),
    "scheduling": frozenset({"clinic_common"}),
    "clinic_nlu": frozenset({"clinic_common", "rasa"}),
    "clinic_core": frozenset({"clinic_common", "clinic_nlu", "rasa"}),
    "channels": frozenset({"clinic_common", "clinic_nlu", "rasa"}),
    "actions": frozenset({"clinic_common", "clinic_nlu", "scheduling", "rasa_sdk"}),
    "staff": frozenset(
        {"clinic_common", "clinic_nlu", "scheduling", "channels", "scripts", "rasa"}
    ),
    "scripts": frozenset({"clinic_common", "staff", "scripts", "rasa"}),
    "benchmarks": frozenset({"clinic_common", "scheduling", "scripts", "rasa"}),
}

# The modules of clinic_nlu that the action server and the staff tools import: they
# must not import Rasa, or the action server would load all of it.
RASA_FREE_NLU = ("clinic_nlu/text.py", "clinic_nlu/red_flags.py")


def imported_roots(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, top-level name) of every absolute import in a file, nested ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def crossings(room: str, allowed: FrozenSet[str]) -> List[str]:
    """Imports of project packages or frameworks that the room may not make."""
    found = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for line, name in imported_roots(path):
            if name in PROJECT | FRAMEWORKS and name != room and name not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


def test_every_package_of_the_project_is_a_room_of_the_table() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages == set(MAY_IMPORT) == PROJECT


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_what_it_may(room: str) -> None:
    assert crossings(room, MAY_IMPORT[room]) == []


@pytest.mark.parametrize("module", RASA_FREE_NLU)
def test_nlu_modules_used_outside_the_rasa_server_import_no_rasa(module: str) -> None:
    names = {name for _, name in imported_roots(ROOT / module)}
    assert not names & FRAMEWORKS, names


def test_the_check_finds_a_crossing(tmp_path: Path) -> None:
    """The walk sees imports inside functions, which are the easy ones to miss."""
    source = tmp_path / "example.py"
    source.write_text("def f():\n    from actions.settings import clinic\n")
    assert list(imported_roots(source)) == [(2, "actions")]
