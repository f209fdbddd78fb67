# shellcheck shell=bash disable=SC2034 # sourced; the variables are used by the scripts
# lib.sh is sourced by the scripts of hack/cluster: the layout and addresses
# of the cluster, and how to run a command inside its namespaces.
#
# Every address below exists only inside the cluster's network namespace,
# which has no route to anything outside itself.
#
# Environment:
#   CXOP_CLUSTER_DIR  state, configuration and logs (default /tmp/cxop-cluster;
#                     not under /run or /var/log, which the cluster's mount
#                     namespace replaces)

CLUSTER_DIR="${CXOP_CLUSTER_DIR:-/tmp/cxop-cluster}"
NETNS=cxop-cluster
NODE_NAME=cxop-node
NODE_IP=10.250.0.2 # on eth0, one end of a veth pair whose peer is in the namespace too
POD_CIDR=10.244.0.0/24 # CNI bridge cni0, gateway 10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1 # Service kubernetes.default
DNS_IP=10.96.0.10 # Service kube-dns -> CoreDNS on NODE_IP:53
APISERVER_URL="https://${NODE_IP}:6443"
KUBECONFIG_FILE="${CLUSTER_DIR}/kubeconfig"
CONTAINERD_SOCK="${CLUSTER_DIR}/containerd/containerd.sock"
# The UID the distroless "nonroot" images use; see the kube-controller-manager
# in up.sh for why PersistentVolumes belong to it.
NONROOT_UID=65532

cluster_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# holder_pid prints the PID of the process that holds the cluster's mount
# namespace (and sits in its network namespace), if it is alive.
holder_pid() {
  local pid
  pid="$(cat "${CLUSTER_DIR}/holder.pid" 2>/dev/null)" || return 1
  # A stale file after a reboot may name an unrelated process: it must be in
  # the cluster's network namespace.
  [[ -n "${pid}" && -d "/proc/${pid}" ]] || return 1
  [[ "$(stat -L -c %i "/proc/${pid}/ns/net" 2>/dev/null)" == "$(stat -L -c %i "/run/netns/${NETNS}" 2>/dev/null)" ]] || return 1
  echo "${pid}"
}

# in_ns runs a command in the cluster's network and mount namespaces. nsenter,
# not `ip netns exec`: the latter remounts /sys, which hides the cgroup mounts
# from the kubelet ("failed to find cgroup mounts").
in_ns() {
  local pid
  pid="$(holder_pid)" || { echo "cxop cluster: not running (no namespace holder in ${CLUSTER_DIR})" >&2; return 1; }
  nsenter -t "${pid}" --mount --net --wd="${PWD}" -- "$@"
}

# cluster_bin prints the directory of the cluster's binaries, building them
# the first time (hack/setup-cluster.sh is instant once cached).
cluster_bin() {
  "${cluster_repo_root}/hack/setup-cluster.sh" | tail -n 1
}
