#!/usr/bin/env bash
# Installs what `make demo` or `make test` needs, on a fresh Debian machine.
#   tools/setup.sh demo   the runtime and what the demo uses: mosquitto, a C compiler for the broker's
#                         subscription-check plugin, the virtualenv with the project's runtime dependencies
#   tools/setup.sh test   (the default) everything the tests use: the demo's, and PostgreSQL, Chromium,
#                         systemd-analyze, the eval/central/test extras, TensorFlow for the training tests
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PROFILE="${1:-test}"
# mosquitto: the demo's and the tests' private brokers. gcc, libc6-dev: the broker's subscription-check
# plugin (tools/mosquitto/sigkiosk_acl.c), built when a broker configuration is written.
APT_PACKAGES=(mosquitto gcc libc6-dev)
case "$PROFILE" in
  demo) ;;
  # postgresql: the central store's tests; chromium: the kiosk screen's tests (driven by playwright
  # without downloading a browser); systemd: systemd-analyze for the unit tests.
  test) APT_PACKAGES+=(postgresql chromium systemd) ;;
  *) echo "usage: tools/setup.sh [demo|test]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packages' own services are not used: tests and the demo start private instances.
for svc in mosquitto postgresql; do
  (command -v systemctl >/dev/null && $SUDO systemctl disable --now "$svc" >/dev/null 2>&1) || true
done

# A fresh virtualenv takes about 3 GB for the tests (TensorFlow alone 1.3 GB) and 0.5 GB for the demo;
# pip unpacks beside that. Refuse early and say so, rather than fail half-way with pip's ENOSPC.
if [ ! -x "$VENV/bin/python" ]; then
  case "$PROFILE" in demo) need_mb=1000 ;; *) need_mb=4000 ;; esac
  # The nearest folder that exists: python -m venv makes the missing ones.
  parent="$(dirname "$VENV")"
  while [ ! -d "$parent" ]; do parent="$(dirname "$parent")"; done
  free_mb="$(df -Pm "$parent" | awk 'NR==2 {print $4}')"
  if [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ]; then
    echo "setup: only ${free_mb} MB free under $(cd "$parent" && pwd); the $PROFILE set-up needs about ${need_mb} MB" >&2
    exit 1
  fi
  python3 -m venv "$VENV"
fi
# No wheel cache: it would hold a second copy of every wheel (TensorFlow's is 0.3 GB) on the machine.
export PIP_NO_CACHE_DIR=1
"$VENV/bin/python" -m pip install -q --upgrade pip
# The device's versions (tools/device-constraints.txt) in every profile: what is tested and measured
# is what a kiosk runs. The development extras stay unpinned.
PIN=(-c tools/device-constraints.txt)
if [ "$PROFILE" = demo ]; then
  "$VENV/bin/python" -m pip install -q "${PIN[@]}" -e .
else
  "$VENV/bin/python" -m pip install -q "${PIN[@]}" -e ".[test]"
  # The training tests (off-device: train --quick, conversion) need the train extra. tf-keras pins
  # the full `tensorflow` package, which would clash with tensorflow-cpu: install it without deps.
  "$VENV/bin/python" -m pip install -q "${PIN[@]}" "tensorflow-cpu==2.21.*" "tqdm>=4.60"
  "$VENV/bin/python" -m pip install -q --no-deps "tf-keras==2.21.*"
fi
echo "setup: done ($PROFILE, $VENV)"
