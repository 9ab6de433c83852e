# Sourced by every script and make target: the project's environment defaults.
# Any variable already set in the environment wins.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT
export VENV="${VENV:-$PROJECT_ROOT/.venv}"
export RASA_TELEMETRY_ENABLED=false          # no usage data leaves the clinic
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export SQLALCHEMY_SILENCE_UBER_WARNING=1
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"
export RASA_PORT="${RASA_PORT:-5005}"
export ACTION_PORT="${ACTION_PORT:-5055}"
export SANIC_HOST="${SANIC_HOST:-127.0.0.1}"  # the action server listens on loopback only
export ACTION_SERVER_URL="${ACTION_SERVER_URL:-http://127.0.0.1:$ACTION_PORT/webhook}"
export STATE_DIR="${STATE_DIR:-$PROJECT_ROOT/var}"
export TRACKER_DB="${TRACKER_DB:-$STATE_DIR/tracker.db}"
export MODEL_PATH="${MODEL_PATH:-$PROJECT_ROOT/models/clinic.tar.gz}"
export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
