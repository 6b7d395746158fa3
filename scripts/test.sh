#!/usr/bin/env bash
# The test command: installs what it needs, then runs the default suite offline (slow and GPU tests excluded).
# Run as: bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/nift models pull smollm2-135m-instruct gemma-3-270m
# The report tests render the report in a real browser: Debian's chromium (CI runs as root on Debian).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium (apt-get) for the report's browser tests ..."
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } > .venv/apt.log 2>&1; then
      tail -20 .venv/apt.log >&2
      echo "test: apt-get install chromium failed (full log: .venv/apt.log)" >&2
      exit 1
    fi
  else
    echo "test: chromium is missing (the report's browser tests need it): apt-get install -y chromium as root" >&2
  fi
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
