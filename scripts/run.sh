#!/usr/bin/env bash
# Sets up what is missing, trains if needed, then runs the action server, the Rasa
# server (REST channel on localhost), the demo page, the staff page and the health
# endpoint under supervisord until Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

scripts/setup.sh
# A model published by `clinicbot retrain --publish` (or restored by `clinicbot
# rollback`) stays live across restarts; otherwise train if the data changed.
if live_model="$("$VENV/bin/python" -m staff live-model)"; then
  MODEL_PATH="$live_model"
else
  scripts/train.sh
fi
# Conversations are patient data: the tracker database and its folder are readable
# by the account that runs the assistant only.
umask 077
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
# Rasa's HTTP API lets `clinicbot retrain --publish` and `rollback` swap the model
# without a restart (PUT /model). Loopback only and never without a token: with
# --enable-api and no token, Rasa leaves the whole API open. The token is kept in
# $STATE_DIR/rasa_api_token (a bad saved one is replaced, a bad RASA_API_TOKEN
# reported) and reaches the Rasa server through its environment, never its command
# line (scripts/api_token.py, scripts/rasa_server.py).
RASA_API_TOKEN="$("$VENV/bin/python" -m scripts.api_token "$STATE_DIR")"
export RASA_API_TOKEN

# --- Supervision: supervisord runs every part and starts again one that stops -------
# The action server, the Rasa server, the demo page (scripts/serve_web.py), the staff
# page (staff/web.py, only with STAFF_PASSWORD) and the health endpoint
# (scripts/health.py); the configuration is written anew from the environment each
# time (scripts/supervise.py). Logs: $STATE_DIR/logs/. Ctrl-C stops them all.
mkdir -p "$STATE_DIR/logs"
chmod 700 "$STATE_DIR/logs"
config="$STATE_DIR/supervisord.conf"
"$VENV/bin/python" -m scripts.supervise config > "$config"
# The summary is printed once the Rasa server and the action server answer; it ends
# by itself if supervisord (this shell's pid, $$, after exec) stops first. Started
# from a subshell so that it is not supervisord's child.
( "$VENV/bin/python" -m scripts.supervise summary "$$" & )
exec "$VENV/bin/supervisord" -n -c "$config"
