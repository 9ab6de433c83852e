"""Where the project and its clinic facts file are, and the error a bad file raises.

Shared by the action server's settings (``actions/settings.py``) and the scheduling
package (``scheduling/config.py``), which reads the ``scheduling:`` section of the
same file, so neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLINIC_CONFIG = PROJECT_ROOT / "clinic.yml"


class ClinicConfigError(ValueError):
    """The clinic facts file is missing, unreadable or malformed."""
