#!/usr/bin/env bash
# Prints the path of promtool (Debian package "prometheus"), installing the
# package when it is missing and this is root, as on CI machines.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus) ..." >&2
    # The package's service must not start inside a build.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
  else
    echo "promtool not found: install the Debian package prometheus (apt-get install prometheus)" >&2
    exit 1
  fi
fi
command -v promtool
