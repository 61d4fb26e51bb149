#!/usr/bin/env bash
# One entry point for a newcomer:  ./dev.sh demo   (the main demo job)   |   ./dev.sh test   (the tests)
# Each creates (or reuses) .venv/ in the repo root and installs what it needs, redis-server included.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$PWD"
VENV="$ROOT/.venv"

python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; }

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]] || ! python_ok "$VENV/bin/python"; then
    local py=""
    for cand in python3.11 python3.12 python3.13 python3; do
      if command -v "$cand" >/dev/null 2>&1 && python_ok "$cand"; then py="$cand"; break; fi
    done
    if [[ -z "$py" ]]; then
      echo "germinator-dist needs Python >= 3.11: install it (apt-get install -y python3 python3-venv) and rerun" >&2
      exit 1
    fi
    echo "== creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  # reinstall only when pyproject.toml changed since the last install
  local stamp="$VENV/.germinator-installed" want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "== installing germinator-dist and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # Debian starts a system service on install; germinator-dist starts its own servers.
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (sudo apt-get)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it with 'sudo apt-get install -y redis-server' (Debian/Ubuntu) and rerun" >&2
    exit 1
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    ensure_venv
    ensure_redis
    exec "$VENV/bin/germinator-dist" demo "$@"
    ;;
  test)
    ensure_venv
    ensure_redis
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [args]   # run the main demo job" >&2
    echo "       ./dev.sh test [pytest args]   # run the tests" >&2
    exit 2
    ;;
esac
