#!/usr/bin/env bash
# The main job: installs what it needs, then runs nift on the embedded default config (no network, no GPU).
# Run as: bash scripts/quickstart.sh [RUN DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/nift run quickstart ${1:+--run-dir "$1"}
