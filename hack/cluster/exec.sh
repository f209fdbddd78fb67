#!/usr/bin/env bash
# exec.sh runs a command inside the network and mount namespaces of the
# cluster hack/cluster/up.sh started, where the API server, the Service IPs
# and the cluster's DNS are reachable; with no command, a shell. KUBECONFIG is
# set, and the cluster's binaries (kubectl) and the repository's bin/ (helm,
# after `make cluster-up`) come first in PATH:
#
#   hack/cluster/exec.sh kubectl get nodes
#   hack/cluster/exec.sh curl http://web.demo.svc.cluster.local
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($#)) || set -- "${SHELL:-/bin/bash}"
KUBECONFIG="${KUBECONFIG_FILE}" PATH="${CLUSTER_DIR}/bin:${cluster_repo_root}/bin:${PATH}" in_ns "$@"
