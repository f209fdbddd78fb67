#!/usr/bin/env bash
# test-cluster.sh runs the cluster tier (`make test-cluster`): it starts the
# single-node cluster of hack/cluster with the cxop image loaded, runs the
# compiled test/cluster binary inside the cluster's network and mount
# namespaces (where Pod and Service addresses exist), and removes the cluster
# again, also when the test fails. KEEP_CLUSTER=1 leaves it running for a
# look around (hack/cluster/exec.sh kubectl get pods -A).
#
#   hack/test-cluster.sh TEST_BINARY IMAGE_TAR [test flags...]
#
# The environment passes HELM, CXOP_IMAGE, PROMETHEUS and MONITORING_CRDS
# through to the test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${repo}/hack/cluster/lib.sh"

test_bin="$(realpath "$1")"
image_tar="$(realpath "$2")"
shift 2

cleanup() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then
    "${repo}/hack/cluster/down.sh"
  else
    echo "test-cluster: the cluster keeps running (KEEP_CLUSTER); hack/cluster/down.sh removes it" >&2
  fi
}
trap cleanup EXIT

start="$(date +%s)"
"${repo}/hack/cluster/up.sh" --image "${image_tar}"
echo "test-cluster: cluster up in $(($(date +%s) - start))s" >&2

cd "${repo}/test/cluster"
in_ns env KUBECONFIG="${KUBECONFIG_FILE}" KUBECTL="${CLUSTER_DIR}/bin/kubectl" \
  CLUSTER_NODE_IP="${NODE_IP}" CLUSTER_DNS_IP="${DNS_IP}" \
  "${test_bin}" -test.v -test.timeout 40m "$@"
echo "test-cluster: done in $(($(date +%s) - start))s" >&2
