#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls 'make test').
# Stops at the first failing step and says which one it was.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

# The held-out accuracy the suite requires: a floor under the measured 79 % (the
# target is 95 %; see docs/thresholds.md).

step() { printf '\n=== %s\n' "$*"; }

step "Lint: ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
step "Types: mypy"
"$VENV/bin/mypy"
step "Rasa data validation (warnings fail)"
"$VENV/bin/rasa" data validate --fail-on-warnings --domain domain.yml --data data
step "Train (only if changed)"
scripts/train.sh
step "Conversation test stories"
rm -rf results/stories
"$VENV/bin/rasa" test core --model "$MODEL_PATH" --stories tests/stories \
  --fail-on-prediction-errors --out results/stories
"$VENV/bin/rasa" test --model "$MODEL_PATH" --stories tests/stories \
  --fail-on-prediction-errors --out results/e2e
step "Held-out NLU evaluation (minimum $MIN_HELDOUT_ACCURACY)"
"$VENV/bin/python" scripts/evaluate_nlu.py --model "$MODEL_PATH" \
  --min-accuracy "$MIN_HELDOUT_ACCURACY" --json results/heldout.json
step "pytest: unit tests and the REST integration tests against real servers"
"$VENV/bin/python" -m pytest tests
