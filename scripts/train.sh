#!/usr/bin/env bash
# Trains the model only when the data, domain, config or NLU components changed
# since the last model (a fingerprint of them is kept next to the model).
# Usage: scripts/train.sh [--force]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"

fingerprint="$(
  find config.yml domain.yml data clinic_nlu requirements.lock requirements-model.txt \
    -type f \( -name "*.yml" -o -name "*.yaml" -o -name "*.py" -o -name "*.lock" \
    -o -name "requirements-model.txt" \) -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
)"
stamp="${MODEL_PATH%.tar.gz}.fingerprint"
if [ "${1:-}" != "--force" ] && [ -f "$MODEL_PATH" ] &&
   [ "$(cat "$stamp" 2>/dev/null)" = "$fingerprint" ]; then
  echo "Model is up to date: $MODEL_PATH"
  exit 0
fi

echo "Training (data, domain or config changed)..."
start=$(date +%s)
"$VENV/bin/rasa" train --config config.yml --domain domain.yml --data data \
  --out "$(dirname "$MODEL_PATH")" --fixed-model-name "$(basename "$MODEL_PATH" .tar.gz)"
echo "$fingerprint" > "$stamp"
echo "Trained in $(( $(date +%s) - start )) s: $MODEL_PATH"
