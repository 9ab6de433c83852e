#!/usr/bin/env bash
# Sets up what is missing, trains if needed, then runs the action server and the Rasa
# server (REST channel on localhost) until Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

scripts/setup.sh
scripts/train.sh
# Conversations are patient data: the tracker database and its folder are readable
# by the account that runs the assistant only.
umask 077
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"

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
  --model "$MODEL_PATH" --credentials credentials.yml --endpoints endpoints.yml &
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

"$VENV/bin/python" scripts/wait_ready.py "http://127.0.0.1:$RASA_PORT/" \
  "http://127.0.0.1:$ACTION_PORT/health"
# --- Website widget: where to see it ---------------------------------------------
demo="http://127.0.0.1:$WEB_PORT/demo/"
kill -0 "$web_pid" 2>/dev/null || demo="not served (see the error above)"
# --- end website widget -------------------------------------------------------------
cat <<MSG

The clinic assistant is running.
  REST:  POST http://127.0.0.1:$RASA_PORT/webhooks/rest/webhook
         e.g. curl -s -XPOST http://127.0.0.1:$RASA_PORT/webhooks/rest/webhook \\
                -d '{"sender":"me","message":"What is a back spasm?"}'
  Chat in a terminal:  make chat   (in another terminal)
  Website widget demo: $demo
  Conversations are kept in $TRACKER_DB
Press Ctrl-C to stop.
MSG
wait -n "${assistant_pids[@]}"  # the assistant's servers, not the demo page
