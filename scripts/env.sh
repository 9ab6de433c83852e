# Sourced by every script and make target: the project's environment defaults.
# Any variable already set in the environment wins. The defaults are those of
# clinic_common/settings.py (README.md, "Settings"), exported here for the shell and
# for the ${VAR}s of endpoints.yml; tests/test_settings.py checks that they agree.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT
export VENV="${VENV:-$PROJECT_ROOT/.venv}"
export RASA_TELEMETRY_ENABLED=false          # no usage data leaves the clinic
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export SQLALCHEMY_SILENCE_UBER_WARNING=1
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"
export RASA_PORT="${RASA_PORT:-5005}"
export ACTION_PORT="${ACTION_PORT:-5055}"
# Website widget: the demo page's port (scripts/serve_web.py). The socketio channel
# allows this page's origin unless WIDGET_ALLOWED_ORIGINS lists others.
export WEB_PORT="${WEB_PORT:-8080}"
# Staff page (staff/web.py): its port and login name. STAFF_PASSWORD has no default:
# without it scripts/run.sh does not start the page.
export STAFF_PORT="${STAFF_PORT:-8090}"
export STAFF_USERNAME="${STAFF_USERNAME:-staff}"
# Health of each part that make run starts (scripts/health.py): GET /health on it.
# The parts' logs are in $STATE_DIR/logs/.
export HEALTH_PORT="${HEALTH_PORT:-5006}"
export SANIC_HOST="${SANIC_HOST:-127.0.0.1}"  # the action server listens on loopback only
export ACTION_SERVER_URL="${ACTION_SERVER_URL:-http://127.0.0.1:$ACTION_PORT/webhook}"
# Seconds the Rasa server waits for a custom action (clinic_core/action_guard.py).
export ACTION_SERVER_TIMEOUT="${ACTION_SERVER_TIMEOUT:-15}"
export STATE_DIR="${STATE_DIR:-$PROJECT_ROOT/var}"
export TRACKER_DB="${TRACKER_DB:-$STATE_DIR/tracker.db}"
export MODEL_PATH="${MODEL_PATH:-$PROJECT_ROOT/models/clinic.tar.gz}"
export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --- SMS through Twilio (channels/twilio_sms.py, credentials.yml) ----------------
# Empty by default: Rasa needs every ${VAR} of credentials.yml set, and an empty
# TWILIO_AUTH_TOKEN turns the SMS webhook off (503) without stopping the assistant.
# Sender: TWILIO_FROM_NUMBER (E.164) or TWILIO_MESSAGING_SERVICE_SID (MG...).
# TWILIO_WEBHOOK_URL: the public URL Twilio posts to, when a proxy is in between.
export TWILIO_ACCOUNT_SID="${TWILIO_ACCOUNT_SID:-}"
export TWILIO_AUTH_TOKEN="${TWILIO_AUTH_TOKEN:-}"
export TWILIO_FROM_NUMBER="${TWILIO_FROM_NUMBER:-}"
export TWILIO_MESSAGING_SERVICE_SID="${TWILIO_MESSAGING_SERVICE_SID:-}"
export TWILIO_WEBHOOK_URL="${TWILIO_WEBHOOK_URL:-}"
export TWILIO_API_BASE="${TWILIO_API_BASE:-https://api.twilio.com}"
# How long an SMS reply is retried (429, 5xx, timeouts, no connection) before it
# counts as failed ('clinicbot sms-failures'); in seconds, across restarts.
export SMS_RETRY_WINDOW_SECONDS="${SMS_RETRY_WINDOW_SECONDS:-3600}"
export MIN_HELDOUT_ACCURACY="${MIN_HELDOUT_ACCURACY:-0.90}"  # make test / clinicbot retrain
