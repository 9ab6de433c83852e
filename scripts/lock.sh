#!/usr/bin/env bash
# Re-resolves requirements.in in a scratch Python 3.10 venv and writes the exact
# versions of every package to requirements.lock (needs access to PyPI).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$VENV/bin/python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r requirements.in
{
  echo "# Exact versions of every package, resolved from requirements.in on Python 3.10."
  echo "# Regenerate with 'make lock'. The spaCy model is pinned by hash in requirements-model.txt."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable
} > requirements.lock
echo "requirements.lock updated; run 'make setup' to install it."
