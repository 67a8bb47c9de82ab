#!/usr/bin/env bash
# The pip route in one command: sets up .venv on first use (pinned by requirements.lock), then
#   ./run.sh demo            the whole pipeline on the embedded demo data
#   ./run.sh test [args]     lint (ruff), type check (mypy), then the test suite (pytest arguments pass through)
#   ./run.sh lint            only the lint and type checks
#   ./run.sh python ARGS     any command inside the environment
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
stamp="$venv/.reefseg-installed"
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "Setting up $venv (first run, or the pinned dependencies changed)..."
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -c requirements.lock -e ".[db,dev]"
  echo "$want" > "$stamp"
fi

export PATH="$PWD/$venv/bin:$PATH"
# Static checks (configured in pyproject.toml); called as a plain command, so `set -e` stops at the first failure.
lint() {
  ruff check .
  ruff format --check .
  mypy
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  demo) exec python demo.py "$@" ;;
  lint) lint ;;
  test) lint; exec python -m pytest "$@" ;;
  *) exec "$cmd" "$@" ;;
esac
