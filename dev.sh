#!/usr/bin/env bash
# finml's one entry point on a fresh machine (Debian/Ubuntu, Python >= 3.11, root or sudo for apt).
#   ./dev.sh main    set up, then the main job: offline preview + policy check of the default stack (dev)
#   ./dev.sh test    set up (incl. Debian packages for the SSH test hosts), preview every stack, run all tests
#   ./dev.sh setup   only set up the virtual environment
#   ./dev.sh features [--rows N ...]   the feature store in local mode (finml features local up) until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")"

# SSH test hosts; real servers for the ML platform's tests (PostgreSQL, Redis, promtool); headless browser for reports.
APT_PACKAGES=(debootstrap debian-archive-keyring openssh-client util-linux postgresql redis-server prometheus chromium)
VENV=.venv
SERVING_VENV=.venv-serving
SERVING_REQUIREMENTS=workloads/model_server/requirements.txt

log() { printf '[dev.sh] %s\n' "$*" >&2; }

setup_system() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

setup_python() {
  local stamp="$VENV/.finml-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python dependencies into $VENV (first run takes several minutes)"
    "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
  fi
}

# MLServer's own environment (its pins clash with the Pulumi SDK's); tests and the demo start the model server from it.
setup_serving() {
  local stamp="$SERVING_VENV/.finml-installed"
  local want
  want=$(sha256sum "$SERVING_REQUIREMENTS" | cut -d' ' -f1)
  if [ ! -x "$SERVING_VENV/bin/python" ]; then
    log "creating $SERVING_VENV"
    python3 -m venv "$SERVING_VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the model server's dependencies into $SERVING_VENV"
    "$SERVING_VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --upgrade pip
    "$SERVING_VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check -r "$SERVING_REQUIREMENTS"
    echo "$want" >"$stamp"
  fi
}

cmd="${1:-}"
case "$cmd" in
  setup)
    setup_python
    ;;
  main)
    setup_python
    exec "$VENV/bin/finml" preview --stack dev
    ;;
  test)
    setup_system
    setup_python
    setup_serving
    log "offline preview + policy check of every stack"
    "$VENV/bin/finml" preview --all
    log "test suite"
    exec "$VENV/bin/python" -m pytest
    ;;
  features)
    # Local mode: the feature store on this machine (PostgreSQL registry, TLS Redis, feast serve over HTTPS).
    setup_system
    setup_python
    shift
    exec "$VENV/bin/finml" features local up "$@"
    ;;
  demo)
    # The whole lifecycle on this machine: features -> torchrun DDP -> registry + lineage -> promotion gate ->
    # MLServer over TLS (load-time gate) -> scoring with online features. Options: python -m finml.demo --help.
    setup_system
    setup_python
    setup_serving
    shift
    exec "$VENV/bin/python" -m finml.demo "$@"
    ;;
  *)
    echo "usage: ./dev.sh main|test|setup|features|demo [options]" >&2
    exit 2
    ;;
esac
