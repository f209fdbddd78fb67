#!/usr/bin/env bash
# down.sh removes everything hack/cluster/up.sh made, so that the next up on
# the same machine starts from nothing: the processes of the cluster (the
# containerd shims and the Pods' processes too), the kubelet's cgroups, the
# network namespace (and with it the cluster's addresses and iptables rules),
# the mount namespace (and with it every mount made inside it), the global
# sysctls the kubelet changed, and the state in $CXOP_CLUSTER_DIR except the
# logs of the last run. It is safe to run when nothing is up.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/lib.sh
source "${here}/lib.sh"
C="${CLUSTER_DIR}"
[[ "$(id -u)" == 0 ]] || { echo "cluster down: must run as root" >&2; exit 1; }

mnt_ns="" net_ns=""
if pid="$(holder_pid)"; then mnt_ns="$(stat -L -c %i "/proc/${pid}/ns/mnt")"; fi
net_ns="$(stat -L -c %i "/run/netns/${NETNS}" 2>/dev/null || true)"

# cluster_pids prints the processes of the cluster: those in its mount or
# network namespace (components, shims, host-network Pods, exec.sh sessions)
# and those in the kubelet's cgroups (Pods have namespaces of their own).
cluster_pids() {
  # One stat for all processes: a fork per process would take seconds.
  stat -L -c '%n %i' /proc/[0-9]*/ns/mnt /proc/[0-9]*/ns/net 2>/dev/null |
    awk -v m="${mnt_ns:--}" -v n="${net_ns:--}" -v self="$$" '
      { split($1, f, "/") }
      f[3] != self && ((f[5] == "mnt" && $2 == m) || (f[5] == "net" && $2 == n)) { print f[3] }'
  kubepods_pids
}
# find, not a ** glob: a glob of a tree whose cgroups are being removed
# may come back empty and leave Pods running.
kubepods_pids() {
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null || true
}
shopt -s nullglob

# The kubelet goes first so that it restarts nothing, then everything else
# gets SIGTERM and, after a grace period, SIGKILL.
mapfile -t pids < <(cluster_pids | sort -u)
kubelet_pid="$(cat "${C}/pids/kubelet.pid" 2>/dev/null || true)"
if [[ -n "${kubelet_pid}" && " ${pids[*]} " == *" ${kubelet_pid} "* ]]; then
  kill -KILL "${kubelet_pid}" 2>/dev/null || true
fi
if ((${#pids[@]})); then
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for i in $(seq 50); do
    mapfile -t pids < <(cluster_pids | sort -u)
    ((${#pids[@]})) || break
    # A Pod's process may ignore SIGTERM; the components get 3 seconds.
    ((i < 30)) || kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  ((${#pids[@]} == 0)) || echo "cluster down: processes still alive: ${pids[*]}" >&2
fi

# Cgroups the kubelet and runc created, deepest first, in every hierarchy.
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  # A cgroup is busy until its last process is killed and reaped.
  for _ in $(seq 30); do
    kubepods_pids | xargs -r kill -KILL 2>/dev/null || true
    find "${d}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d "${d}" ]] || break
    sleep 0.1
  done
  [[ ! -d "${d}" ]] || echo "cluster down: could not remove cgroup ${d}" >&2
done

# Deleting the namespace deletes its links, routes and iptables rules; the
# mount namespace went away with its last process.
[[ -z "${net_ns}" ]] || ip netns delete "${NETNS}"
# Nothing should be left mounted on the host; be sure.
awk -v c="${C}/" '$5 ~ "^" c || $5 == "/var/lib/kubelet" || $5 == "/var/lib/cni" || $5 == "/tmp/hostpath_pv" { print $5 }' /proc/self/mountinfo |
  sort -r | while read -r m; do echo "cluster down: unmounting leftover ${m}" >&2; umount -l "${m}" || true; done

if [[ -f "${C}/sysctls.orig" ]]; then
  while IFS='=' read -r key value; do sysctl -qw "${key}=${value}" || true; done <"${C}/sysctls.orig"
fi
if [[ -f "${C}/created-dirs" ]]; then
  while read -r d; do
    if [[ -z "$(ls -A "${d}" 2>/dev/null)" ]]; then
      ! mountpoint -q "${d}" || umount "${d}" || true
      rmdir "${d}" 2>/dev/null || true
    fi
  done <"${C}/created-dirs"
fi
if [[ -d "${C}" ]]; then
  find "${C}" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf --one-file-system {} +
fi
echo "cluster down: done (logs kept in ${C}/logs)" >&2
