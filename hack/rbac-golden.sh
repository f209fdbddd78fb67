#!/usr/bin/env bash
# rbac-golden.sh renders every RBAC object of charts/cxop, in cluster-wide
# and in namespaced mode, into test/chart/testdata/. The files are checked
# in so that a change of what the manager may do shows in review as a diff;
# `make verify` runs this and fails if the result is not committed, and
# test/chart compares them with a fresh render.
# Usage: hack/rbac-golden.sh HELM
set -euo pipefail
helm="${1:?usage: rbac-golden.sh HELM}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/test/chart/testdata"
mkdir -p "${out}"
render() {
  "${helm}" template cxop "${root}/charts/cxop" --namespace cxop-system \
    --show-only templates/rbac.yaml "$@"
}
render >"${out}/rbac-cluster-wide.golden.yaml"
render --set 'watchNamespaces={shop,support}' >"${out}/rbac-namespaced.golden.yaml"
