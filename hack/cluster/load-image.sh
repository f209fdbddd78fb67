#!/usr/bin/env bash
# load-image.sh imports image tarballs (docker-archive or OCI layout, e.g. from
# `docker save` or `go run ./hack/image`) into the containerd
# of the running cluster, where Pods find them without pulling (use
# imagePullPolicy IfNotPresent or Never, and a tag other than :latest).
#
#   hack/cluster/load-image.sh FILE.tar...
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($#)) || { echo "usage: $0 FILE.tar..." >&2; exit 2; }
for f in "$@"; do
  in_ns ctr -a "${CONTAINERD_SOCK}" -n k8s.io images import "$(realpath "${f}")"
done
