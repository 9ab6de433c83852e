"""Settings of the action server.

The clinic facts of ``clinic.yml`` are read and parsed by
``clinic_common.clinic_config``, the environment by ``clinic_common.settings``: every
process shares them. Their names are re-exported here for the actions' imports.
Nothing is read at import time.
"""

from __future__ import annotations

from clinic_common.clinic_config import SECTIONS
from clinic_common.clinic_config import ClinicConfigError as ClinicConfigError
from clinic_common.clinic_config import ClinicInfo as ClinicInfo
from clinic_common.clinic_config import clinic as clinic
from clinic_common.clinic_config import parse_clinic_config as parse_clinic_config

# "Did you mean" suggests a topic only if its confidence reaches this share. Chosen on
# data_validation/*.yml (625 messages): all 416 right suggestions score 0.134 or more;
# 14 of 15 out-of-scope messages score below 0.1 (the 15th, 0.35).
SUGGESTION_MIN_CONFIDENCE = 0.12

# Sections of clinic.yml that are not clinic facts (``scheduling``).
OTHER_SECTIONS = SECTIONS
