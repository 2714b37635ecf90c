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

# ensure_venv DIR STAMP_SOURCE PIP_ARGS...: create DIR if missing and install PIP_ARGS into it, again only when
# STAMP_SOURCE (the file that declares the dependencies) has changed since the last install.
ensure_venv() {
  local venv="$1" source="$2"
  shift 2
  local stamp="$venv/.finml-installed"
  local want
  want=$(sha256sum "$source" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the dependencies of $source into $venv (the first run takes several minutes)"
    "$venv/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "$@"
    echo "$want" >"$stamp"
  fi
}

setup_python() { ensure_venv "$VENV" pyproject.toml -e '.[test]'; }

# MLServer's own environment (its pins clash with the Pulumi SDK's); tests and the demo start the model server from it.
setup_serving() { ensure_venv "$SERVING_VENV" "$SERVING_REQUIREMENTS" -r "$SERVING_REQUIREMENTS"; }

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
    # One worker per core (at most 4: each worker starts its own session servers); FINML_TEST_WORKERS=0 runs serially.
    log "test suite"
    shift
    exec "$VENV/bin/python" -m pytest -n "${FINML_TEST_WORKERS:-auto}" --maxprocesses 4 "$@"
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
