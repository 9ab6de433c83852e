"""Where the staff commands find the project's files, and their settings.

The data files are found under the project root (``PROJECT_ROOT``, which
``scripts/env.sh`` sets; by default the folder this package is in), the code under
``CODE_ROOT``. They differ only in the tests, which edit a temporary copy of the data
and never the repository's own files.

Settings come from the environment (``clinic_common.settings``, which has the
defaults) and are read once, into ``Settings``, so every function gets them as an
argument and a test can pass its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

from clinic_common.settings import RETRIEVAL_INTENT as RETRIEVAL_INTENT
from clinic_common.settings import load as load_settings
from scripts.api_token import TOKEN_FILE

CODE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Project:
    """The files of one copy of the project."""

    root: Path

    @property
    def nlu_dir(self) -> Path:
        """Training examples, one file per concern."""
        return self.root / "data" / "nlu"

    @property
    def faq_nlu(self) -> Path:
        """Where new FAQ topics' examples go."""
        return self.nlu_dir / "faq.yml"

    @property
    def faq_responses(self) -> Path:
        """The FAQ answers, ``utter_faq/<topic>``."""
        return self.root / "data" / "responses" / "faq.yml"

    @property
    def faq_titles(self) -> Path:
        """The "Did you mean" button titles that actions/faq.py reads."""
        return self.root / "actions" / "faq_titles.yml"

    @property
    def heldout(self) -> Path:
        """The held-out test set: never trained on."""
        return self.root / "tests" / "nlu_heldout" / "heldout.yml"

    @property
    def validation_sets(self) -> Tuple[Path, ...]:
        """The sets the thresholds are tuned on: never trained on either."""
        return tuple(sorted((self.root / "data_validation").glob("*.yml")))

    @property
    def story_dirs(self) -> Tuple[Path, ...]:
        """Conversation tests, whose messages must be new to the model."""
        tests = self.root / "tests"
        return (tests / "stories", tests / "stories_known_nlu_misses")

    @property
    def stories(self) -> Path:
        """The conversation tests a new model must pass."""
        return self.root / "tests" / "stories"

    @property
    def config(self) -> Path:
        """The NLU pipeline and policies."""
        return self.root / "config.yml"

    @property
    def domain(self) -> Path:
        """The domain (the FAQ answers are in data/responses/)."""
        return self.root / "domain.yml"

    @property
    def models_dir(self) -> Path:
        """Trained models, the publishing history and the retrain lock."""
        return self.root / "models"

    @property
    def results_dir(self) -> Path:
        """Logs and evaluation results of each retrain."""
        return self.root / "results" / "retrain"

    def training_inputs(self) -> Tuple[Path, ...]:
        """Every file a model is trained from: a change to one needs a retrain."""
        data = sorted(
            path
            for path in (self.root / "data").rglob("*")
            if path.suffix in (".yml", ".yaml") and path.is_file()
        )
        code = sorted((CODE_ROOT / "clinic_nlu").glob("*.py"))
        pins = [CODE_ROOT / "requirements.lock", CODE_ROOT / "requirements-model.txt"]
        return (
            self.config,
            self.domain,
            *data,
            *code,
            *(pin for pin in pins if pin.is_file()),
        )

    def edited_files(self) -> Tuple[Path, ...]:
        """The files staff edit: their newest change is when an edit was made."""
        data = sorted(
            path for path in (self.root / "data").rglob("*.yml") if path.is_file()
        )
        return (*data, self.faq_titles, self.domain, self.config)


@dataclass(frozen=True)
class Settings:
    """The environment the staff commands run in."""

    project: Project
    state_dir: Path
    tracker_db: Path
    model_path: Path
    rasa_url: str
    api_token: Optional[str]
    min_heldout_accuracy: float
    # The Rasa endpoints file (``ENDPOINTS``), whose tracker store the staff tools
    # read; None: the project's endpoints.yml.
    endpoints: Optional[Path] = None

    @property
    def endpoints_file(self) -> Path:
        """The endpoints file the Rasa server reads (the scaled profile's, say)."""
        return self.endpoints or self.project.root / "endpoints.yml"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        """Reads the settings (``clinic_common.settings``, its defaults)."""
        config = load_settings(environ)
        token = config.rasa_api_token or _read_token(config.state_dir / TOKEN_FILE)
        return cls(
            project=Project(config.project_root),
            state_dir=config.state_dir,
            tracker_db=config.tracker_db,
            model_path=config.model_path,
            rasa_url=config.rasa_url,
            api_token=token,
            min_heldout_accuracy=config.min_heldout_accuracy,
            endpoints=config.endpoints,
        )


def _read_token(path: Path) -> Optional[str]:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None
