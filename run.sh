#!/usr/bin/env bash
# Set up .venv from the lockfile (once, and again whenever the lock changes), then
#   bash run.sh test [pytest args]     run the whole test suite
#   bash run.sh docs [mkdocs args]     build the documentation site into site/ (strict)
#   bash run.sh [winit-jax args]       run the CLI (default: compare, the main job)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${WINIT_VENV:-.venv}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "run.sh: needs Python >= 3.11 (set PYTHON=...), found $("$PY" --version 2>&1)" >&2; exit 2; }

stamp="$VENV/.lock-$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "run.sh: installing the locked environment into $VENV (first run: a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/lock.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  rm -f "$VENV"/.lock-*
  touch "$stamp"
fi

if [ "${1:-}" = "test" ]; then
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
if [ "${1:-}" = "docs" ]; then
  shift
  NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" build --strict "$@"
fi
[ $# -gt 0 ] || set -- compare
exec "$VENV/bin/winit-jax" "$@"
