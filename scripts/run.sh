#!/usr/bin/env bash
# Sets up what is missing, trains if needed, then runs the action server and the Rasa
# server (REST channel on localhost) until Ctrl-C.
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
# --enable-api and no token, Rasa leaves the whole API open.
if [ -z "${RASA_API_TOKEN:-}" ]; then
  token_file="$STATE_DIR/rasa_api_token"
  [ -s "$token_file" ] ||
    "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$token_file"
  RASA_API_TOKEN="$(cat "$token_file")"
fi
export RASA_API_TOKEN

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$VENV/bin/rasa" run actions --port "$ACTION_PORT" --actions actions &
pids+=($!)
"$VENV/bin/rasa" run --interface 127.0.0.1 --port "$RASA_PORT" \
  --model "$MODEL_PATH" --credentials credentials.yml --endpoints endpoints.yml \
  --enable-api --auth-token "$RASA_API_TOKEN" &
pids+=($!)

# --- Website widget: the demo page (scripts/serve_web.py, web/) ---------------------
# Optional: if it cannot start (say WEB_PORT is taken) the assistant runs on without
# it, so only the two servers above are waited on at the end.
assistant_pids=("${pids[@]}")
"$VENV/bin/python" scripts/serve_web.py --port "$WEB_PORT" \
  --server-url "http://127.0.0.1:$RASA_PORT" &
web_pid=$!
pids+=("$web_pid")
# --- end website widget -------------------------------------------------------------

# --- Staff page: FAQ, missed messages, retrain in a browser (staff/web.py) ---------
# Only with a login: without STAFF_PASSWORD it is not started (the summary says so).
# Optional like the demo page: the assistant runs on if it cannot start.
staff_pid=""
if [ -n "${STAFF_PASSWORD:-}" ]; then
  "$VENV/bin/python" -m staff.web --port "$STAFF_PORT" &
  staff_pid=$!
  pids+=("$staff_pid")
fi
# --- end staff page -----------------------------------------------------------------

"$VENV/bin/python" scripts/wait_ready.py "http://127.0.0.1:$RASA_PORT/" \
  "http://127.0.0.1:$ACTION_PORT/health"
# --- Website widget: where to see it ---------------------------------------------
demo="http://127.0.0.1:$WEB_PORT/demo/"
kill -0 "$web_pid" 2>/dev/null || demo="not served (see the error above)"
# --- end website widget -------------------------------------------------------------
# --- Staff page: where to see it -------------------------------------------------
staff_page="not started: set STAFF_PASSWORD (and STAFF_USERNAME) to start it"
if [ -n "$staff_pid" ]; then
  staff_page="http://127.0.0.1:$STAFF_PORT/ (log in as $STAFF_USERNAME)"
  kill -0 "$staff_pid" 2>/dev/null || staff_page="not served (see the error above)"
fi
# --- end staff page -----------------------------------------------------------------
cat <<MSG

The clinic assistant is running.
  REST:  POST http://127.0.0.1:$RASA_PORT/webhooks/rest/webhook
         e.g. curl -s -XPOST http://127.0.0.1:$RASA_PORT/webhooks/rest/webhook \\
                -d '{"sender":"me","message":"What is a back spasm?"}'
  Chat in a terminal:  make chat   (in another terminal)
  Website widget demo: $demo
  Staff page:          $staff_page
  Conversations are kept in $TRACKER_DB
Press Ctrl-C to stop.
MSG
wait -n "${assistant_pids[@]}"  # the assistant's servers, not the demo page
