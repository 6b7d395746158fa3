#!/usr/bin/env bash
# The test command: installs what it needs, then runs the default suite offline (slow and GPU tests excluded).
# Run as: bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/nift models pull smollm2-135m-instruct gemma-3-270m
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
