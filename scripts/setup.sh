#!/usr/bin/env bash
# Create .venv and install the project (train, export and serve extras) and the dev tools.
# torch is installed first, pinned, so nothing pulls a CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[train,export,serve]" --group dev

# Prometheus for tests/service/test_prometheus.py: Debian's package, where it is missing and apt-get can install
# it (as root). A policy-rc.d that denies service starts keeps the package from starting a Prometheus daemon.
install_prometheus() {
  local policy=/usr/sbin/policy-rc.d added="" rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || rc=$?
  if [ -n "$added" ]; then rm -f "$policy"; fi
  return "$rc"
}
if ! command -v prometheus >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  install_prometheus || echo "warning: prometheus could not be installed; tests/service/test_prometheus.py skips"
fi
