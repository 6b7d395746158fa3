#!/usr/bin/env bash
# The main job: installs what it needs, then runs nift on the embedded default config (no network, no GPU).
# Run as: bash scripts/quickstart.sh [RUN DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# OMP_WAIT_POLICY=PASSIVE: torch's idle OpenMP threads sleep instead of spinning, which costs little on an idle
# machine and saves a lot on a busy one (measured here: 16 tokens of SmolLM2 in 29 s spinning vs 3.8 s passive).
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/nift run quickstart ${1:+--run-dir "$1"}
