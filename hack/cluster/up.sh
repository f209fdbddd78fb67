#!/usr/bin/env bash
# up.sh starts a real single-node Kubernetes cluster, built from source by
# hack/setup-cluster.sh, inside a network namespace and a mount namespace of
# its own: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, kubelet, kube-proxy and CoreDNS all run as processes there, and
# every address of the cluster (node, Pods, Services, DNS) exists only in that
# network namespace, which has no route to anything outside itself.
#
#   hack/cluster/up.sh [--image FILE.tar]...   start (or report the running cluster)
#   hack/cluster/exec.sh kubectl get pods -A    run a command inside it
#   hack/cluster/load-image.sh FILE.tar         load an image tarball later
#   hack/cluster/down.sh                        remove everything it made
#
# It returns once the node is Ready, DNS answers and the kube-system default
# ServiceAccount exists. Needs root (the kubelet manages cgroups and mounts).
# Addresses and CXOP_CLUSTER_DIR: see lib.sh. Logs: $CXOP_CLUSTER_DIR/logs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/lib.sh
source "${here}/lib.sh"

die() { echo "cluster up: $*" >&2; exit 1; }
log() { echo "cluster up: $*" >&2; }

images=()
while (($#)); do
  case "$1" in
    --image) [[ $# -ge 2 ]] || die "--image needs a file"; images+=("$(realpath "$2")"); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

# --- can this host run a kubelet? (one line saying why not) -----------------
cgroups_ok() {
  local c
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then # cgroup v2 only
    for c in cpu cpuset memory pids; do grep -qw "${c}" /sys/fs/cgroup/cgroup.controllers || return 1; done
  else
    for c in cpu cpuacct cpuset memory pids; do [[ -e "/sys/fs/cgroup/${c}/cgroup.procs" ]] || return 1; done
  fi
}
[[ "$(id -u)" == 0 ]] || die "must run as root: the kubelet and containerd create cgroups, mounts and network namespaces"
cgroups_ok || die "the cpu, cpuacct, cpuset, memory and pids cgroup controllers must be mounted under /sys/fs/cgroup for the kubelet"
[[ "${CLUSTER_DIR}" != /run/* && "${CLUSTER_DIR}" != /var/log/* ]] || die "CXOP_CLUSTER_DIR must not be under /run or /var/log (the cluster's mount namespace replaces them)"

summary() {
  cat <<EOF
cxop cluster is up: node ${NODE_NAME} (${NODE_IP}), Kubernetes $("${CLUSTER_DIR}/bin/kubelet" --version | cut -d' ' -f2)
  export KUBECONFIG=${KUBECONFIG_FILE}  # API server ${APISERVER_URL}, reachable only inside the namespace
  hack/cluster/exec.sh kubectl get pods -A     # run a command in the cluster's network+mount namespaces
  hack/cluster/load-image.sh IMAGE.tar         # load an image (imagePullPolicy: IfNotPresent or Never)
  hack/cluster/down.sh                         # remove everything
EOF
}

if holder_pid >/dev/null && in_ns "${CLUSTER_DIR}/bin/kubectl" --kubeconfig "${KUBECONFIG_FILE}" get --raw /readyz >/dev/null 2>&1; then
  log "already running in ${CLUSTER_DIR}"
  for image in "${images[@]}"; do "${here}/load-image.sh" "${image}" >/dev/null; done
  summary
  exit 0
fi
# Leftovers of a cluster that died or failed to start.
if [[ -e "${CLUSTER_DIR}/holder.pid" || -e "/run/netns/${NETNS}" ]]; then
  log "cleaning up a previous cluster"
  "${here}/down.sh"
fi

bin="$(cluster_bin)"
for cmd in containerd runc /usr/lib/cni/bridge /usr/lib/cni/host-local iptables ip nsenter unshare setpriv openssl; do
  command -v "${cmd}" >/dev/null 2>&1 || die "${cmd} is missing: run hack/setup-cluster.sh as root to install it"
done

start_time=${SECONDS}
C="${CLUSTER_DIR}"
pki="${C}/pki"
rm -rf "${C}/logs"
mkdir -p "${C}"/{pki,logs,pids,etcd,containerd,cni/net.d,cni/lib,kubelet,var-log,hostpath}
ln -sfn "${bin}" "${C}/bin"

# The kubelet sets these global sysctls (protectKernelDefaults: false);
# down.sh puts them back.
sysctl -e vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes | tr -d ' ' >"${C}/sysctls.orig"

# --- certificates and kubeconfigs -------------------------------------------
log "generating certificates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=cxop-cluster-ca" -keyout "${pki}/ca.key" -out "${pki}/ca.crt" 2>/dev/null
cert() { # name subject extensions
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
    -keyout "${pki}/$1.key" -out "${pki}/$1.csr" 2>/dev/null
  openssl x509 -req -in "${pki}/$1.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 3650 -extfile <(printf 'basicConstraints=CA:FALSE\n%s\n' "$3") -out "${pki}/$1.crt" 2>/dev/null
  rm -f "${pki}/$1.csr"
}
client=extendedKeyUsage=clientAuth
cert apiserver /CN=kube-apiserver "extendedKeyUsage=serverAuth
subjectAltName=IP:${NODE_IP},IP:${KUBERNETES_SVC_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client "${client}"
cert front-proxy-client /CN=front-proxy-client "${client}"
cert admin /O=system:masters/CN=cxop-admin "${client}"
cert kubelet "/O=system:nodes/CN=system:node:${NODE_NAME}" "${client}"
cert kube-controller-manager /CN=system:kube-controller-manager "${client}"
cert kube-scheduler /CN=system:kube-scheduler "${client}"
cert kube-proxy /CN=system:kube-proxy "${client}"
openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/sa.key"
openssl ec -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null

kubeconfig() { # file cert
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cxop
  cluster:
    server: ${APISERVER_URL}
    certificate-authority-data: $(base64 -w0 "${pki}/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "${pki}/$2.crt")
    client-key-data: $(base64 -w0 "${pki}/$2.key")
contexts:
- name: cxop
  context: {cluster: cxop, user: $2}
current-context: cxop
EOF
  chmod 0600 "$1"
}
kubeconfig "${KUBECONFIG_FILE}" admin
# CoreDNS only reads Services, EndpointSlices, Namespaces and Pods; the admin
# identity saves an RBAC role that would need the API server up first.
kubeconfig "${C}/coredns.kubeconfig" admin
for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do kubeconfig "${C}/${c}.kubeconfig" "${c}"; done

# --- configuration ----------------------------------------------------------
render() {
  sed -e "s|@CLUSTER_DIR@|${C}|g" -e "s|@NODE_IP@|${NODE_IP}|g" -e "s|@NODE_NAME@|${NODE_NAME}|g" \
    -e "s|@POD_CIDR@|${POD_CIDR}|g" -e "s|@DNS_IP@|${DNS_IP}|g" "${here}/config/$1" >"$2"
}
render containerd.toml "${C}/containerd/config.toml"
render cni.conflist "${C}/cni/net.d/10-cxop.conflist"
render kubelet.yaml "${C}/kubelet.yaml"
render kube-proxy.yaml "${C}/kube-proxy.yaml"
render Corefile "${C}/Corefile"
render cluster.yaml "${C}/cluster.yaml"
# Pods (dnsPolicy Default too) and processes in the namespace resolve through
# the cluster's DNS only.
echo "nameserver ${DNS_IP}" >"${C}/resolv.conf"

# --- namespaces ---------------------------------------------------------------
log "creating network namespace ${NETNS} and the cluster's mount namespace"
# Mount points missing on the host are made, and recorded so that down.sh
# removes them: /run/netns (iproute2 makes it and bind-mounts it on itself)
# and the paths replaced inside the mount namespace below.
: >"${C}/created-dirs"
for d in /run/netns /var/lib/kubelet /var/lib/cni /tmp/hostpath_pv; do
  [[ -d "${d}" ]] || echo "${d}" >>"${C}/created-dirs"
done
mkdir -p /var/lib/kubelet /var/lib/cni /tmp/hostpath_pv
ip netns add "${NETNS}"
ip -n "${NETNS}" link set lo up
# The node's address sits on a veth pair whose both ends are in the namespace.
ip -n "${NETNS}" link add eth0 type veth peer name eth0-peer
ip -n "${NETNS}" addr add "${NODE_IP}/24" dev eth0
ip -n "${NETNS}" link set eth0-peer up
ip -n "${NETNS}" link set eth0 up
# Processes of the node reach Service IPs through this route (kube-proxy
# rewrites the destination after routing); there is no default route.
ip -n "${NETNS}" route add "${SERVICE_CIDR}" dev eth0

# Paths the kubelet, containerd and the CNI plugins use whatever their
# configuration says are replaced, inside the mount namespace only, by
# directories of the cluster; mounts made in there (the kubelet's, the Pods'
# volumes and rootfs) vanish with it.
# The hostpath provisioner creates PersistentVolumes as its own user (see the
# kube-controller-manager below).
chown "${NONROOT_UID}:${NONROOT_UID}" "${C}/hostpath"
resolv_target="$(readlink -f /etc/resolv.conf)"
# shellcheck disable=SC2016 # expanded by the holder's shell
setsid nsenter --net="/run/netns/${NETNS}" -- unshare --mount --propagation private -- bash -c '
  set -e
  C=$1 resolv=$2
  mount -t tmpfs -o mode=0755 cxop-run /run              # runc, shims, netns mounts, xtables lock
  mount --bind "${C}/kubelet" /var/lib/kubelet           # its root dir; device-plugins/ is hard-coded
  mount --bind "${C}/var-log" /var/log                   # /var/log/pods and /var/log/containers
  mount --bind "${C}/cni/lib" /var/lib/cni               # CNI cache and host-local IPAM
  mount --bind "${C}/hostpath" /tmp/hostpath_pv          # the hostpath provisioner (fixed path)
  [ -e "${resolv}" ] || { mkdir -p "$(dirname "${resolv}")" && touch "${resolv}"; } # it may live in /run
  mount --bind "${C}/resolv.conf" "${resolv}"
  echo $$ >"${C}/holder.pid"
  exec sleep infinity
' cxop-ns-holder "${C}" "${resolv_target}" </dev/null >"${C}/logs/holder.log" 2>&1 &
for _ in $(seq 50); do holder_pid >/dev/null && break; sleep 0.1; done
holder="$(holder_pid)" || die "the namespace holder did not start: $(cat "${C}/logs/holder.log")"

# --- components -------------------------------------------------------------
start() { # name command...
  local name="$1"; shift
  nsenter -t "${holder}" --mount --net --wd=/ -- setsid "$@" </dev/null >"${C}/logs/${name}.log" 2>&1 &
  echo $! >"${C}/pids/${name}.pid"
}
fail() { # what log
  echo "cluster up: timed out waiting for $1; last lines of ${C}/logs/$2.log:" >&2
  tail -n 20 "${C}/logs/$2.log" >&2
  echo "cluster up: hack/cluster/down.sh cleans up" >&2
  exit 1
}
wait_for() { # what log timeout-seconds command...
  local what="$1" logname="$2" deadline=$((SECONDS + $3)); shift 3
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "${what}" "${logname}"
    if [[ -e "${C}/pids/${logname}.pid" ]] && ! kill -0 "$(cat "${C}/pids/${logname}.pid")" 2>/dev/null; then
      echo "cluster up: ${logname} exited" >&2
      fail "${what}" "${logname}"
    fi
    sleep 0.5
  done
}
kubectl() { in_ns "${bin}/kubectl" --kubeconfig "${KUBECONFIG_FILE}" "$@"; }

log "starting etcd and kube-apiserver"
# A throwaway cluster: no fsync keeps etcd fast on a shared disk.
start etcd "${bin}/etcd" --name "${NODE_NAME}" --data-dir "${C}/etcd" --log-level warn --unsafe-no-fsync \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "${NODE_NAME}=http://127.0.0.1:2380"
wait_for etcd etcd 30 in_ns curl -fsS http://127.0.0.1:2379/health

# PodSecurity is among the default admission plugins. The kubelet is reached
# by its IP: the node's name is in no DNS. The front proxy (requestheader)
# settings let aggregated API servers authenticate requests.
start kube-apiserver "${bin}/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --advertise-address="${NODE_IP}" --secure-port=6443 \
  --service-cluster-ip-range="${SERVICE_CIDR}" \
  --client-ca-file="${pki}/ca.crt" \
  --tls-cert-file="${pki}/apiserver.crt" --tls-private-key-file="${pki}/apiserver.key" \
  --kubelet-client-certificate="${pki}/apiserver-kubelet-client.crt" \
  --kubelet-client-key="${pki}/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --requestheader-client-ca-file="${pki}/ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="${pki}/front-proxy-client.crt" --proxy-client-key-file="${pki}/front-proxy-client.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${pki}/sa.pub" --service-account-signing-key-file="${pki}/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true
wait_for kube-apiserver kube-apiserver 90 kubectl get --raw /readyz

log "starting kube-controller-manager, kube-scheduler and containerd"
# The in-tree hostpath provisioner makes each volume directory with mode 0750
# as the user it runs as; running the controller manager as the distroless
# "nonroot" user (it needs no privilege) makes volumes writable by Pods that
# run as that user, as restricted Pods usually do.
chown "${NONROOT_UID}" "${pki}/sa.key" "${pki}/ca.key" "${C}/kube-controller-manager.kubeconfig"
start kube-controller-manager setpriv --reuid="${NONROOT_UID}" --regid="${NONROOT_UID}" --clear-groups -- \
  "${bin}/kube-controller-manager" \
  --kubeconfig="${C}/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="${C}/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="${C}/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --controllers='*' --use-service-account-credentials \
  --service-account-private-key-file="${pki}/sa.key" --root-ca-file="${pki}/ca.crt" \
  --cluster-signing-cert-file="${pki}/ca.crt" --cluster-signing-key-file="${pki}/ca.key" \
  --service-cluster-ip-range="${SERVICE_CIDR}" --enable-hostpath-provisioner
start kube-scheduler "${bin}/kube-scheduler" \
  --kubeconfig="${C}/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="${C}/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="${C}/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false
start containerd containerd --config "${C}/containerd/config.toml"
wait_for containerd containerd 30 in_ns ctr -a "${CONTAINERD_SOCK}" version
in_ns ctr -a "${CONTAINERD_SOCK}" -n k8s.io images import "${bin}/pause.tar" >/dev/null
for image in "${images[@]}"; do in_ns ctr -a "${CONTAINERD_SOCK}" -n k8s.io images import "${image}" >/dev/null; done

log "starting kubelet, kube-proxy and CoreDNS"
start kubelet "${bin}/kubelet" --config="${C}/kubelet.yaml" --kubeconfig="${C}/kubelet.kubeconfig" \
  --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}"
start kube-proxy "${bin}/kube-proxy" --config="${C}/kube-proxy.yaml"
# CoreDNS runs as a process of the node rather than as a Pod: it is up before
# the node is Ready, needs no image, and its Service (cluster.yaml) makes it
# look like the usual kube-dns to Pods.
start coredns "${bin}/coredns" -conf "${C}/Corefile"

wait_for "the kube-dns Service and the default StorageClass" kube-apiserver 30 kubectl apply -f "${C}/cluster.yaml"
node_ready() { [[ "$(kubectl get node "${NODE_NAME}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
wait_for "node ${NODE_NAME} Ready" kubelet 120 node_ready
wait_for "the kube-system default ServiceAccount" kube-controller-manager 60 kubectl -n kube-system get serviceaccount default
# Through the node's resolver, the kube-dns Service (kube-proxy) and CoreDNS.
dns_ready() { [[ "$(in_ns getent hosts kubernetes.default.svc.cluster.local)" == "${KUBERNETES_SVC_IP} "* ]]; }
wait_for "DNS (kubernetes.default.svc.cluster.local)" coredns 60 dns_ready

log "ready in $((SECONDS - start_time))s"
summary
