#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium (Debian package
# "chromium"), installing the package when it is missing and this is root,
# as on CI machines. The survey page's browser test drives it.
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then command -v "$c"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium (Debian package chromium) ..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
  command -v chromium
  exit 0
fi
echo "chromium not found: install the Debian package chromium (apt-get install chromium)" >&2
exit 1
