#!/usr/bin/env bash
# setup-cluster.sh builds everything hack/cluster/up.sh runs that
# hack/setup-envtest.sh does not: kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy from the k8s.io/kubernetes module, a CoreDNS
# with only the plugins a cluster needs, and the pause image. All of it comes
# through the Go module proxy: no release binary or image can be downloaded
# on the machines this project is built on. As root it also installs the
# Debian packages that run containers (containerd, runc, the CNI plugins,
# iptables) when they are missing.
#
# The binaries go into a cache directory outside the repository, keyed by
# version, together with symlinks to the envtest binaries (kube-apiserver,
# etcd, kubectl), so one directory holds the whole cluster. It is printed as
# the LAST line of output:
#
#   bin="$(hack/setup-cluster.sh | tail -n 1)"
#
# Environment:
#   CXOP_CACHE       cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/cxop)
#   K8S_VERSION      Kubernetes version (default: the one setup-envtest.sh derives from go.mod)
#   COREDNS_VERSION  CoreDNS version (default below; its client-go matches Kubernetes 1.37)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
log() { echo "setup-cluster: $*" >&2; }

# --- Debian packages --------------------------------------------------------
install_packages() {
  local missing=() cmd pkg
  for cmd in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    iptables:iptables ip:iproute2 nsenter:util-linux openssl:openssl; do
    pkg="${cmd#*:}"; cmd="${cmd%%:*}"
    if [[ "${cmd}" == /* ]]; then [[ -x "${cmd}" ]] || missing+=("${pkg}")
    else command -v "${cmd}" >/dev/null 2>&1 || missing+=("${pkg}"); fi
  done
  ((${#missing[@]})) || return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    # Building needs no root; only hack/cluster/up.sh needs these, and says so.
    log "not installing ${missing[*]} (needs root and apt-get); hack/cluster/up.sh needs them"
    return 0
  fi
  log "installing ${missing[*]}"
  # containerd's service must not start: hack/cluster/up.sh runs its own.
  local created="" rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created=1
  fi
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [[ -z "${created}" ]] || rm -f /usr/sbin/policy-rc.d
  return "${rc}"
}
install_packages

# --- versions and cache -----------------------------------------------------
# setup-envtest.sh builds kube-apiserver, etcd and kubectl (and is instant when
# cached); its stamp file records the versions it derived.
envtest="$(K8S_VERSION="${K8S_VERSION:-}" "${repo_root}/hack/setup-envtest.sh" | tail -n 1)"
read -r K8S_VERSION _ <"${envtest}/.complete"
staging_version="v0.${K8S_VERSION#v1.}"

cache_root="${CXOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cxop}"
assets="${cache_root}/cluster/k8s-${K8S_VERSION}-coredns-${COREDNS_VERSION}-$(go env GOOS)-$(go env GOARCH)"
stamp="${assets}/.complete"
kube_bins=(kubelet kube-controller-manager kube-scheduler kube-proxy)

have_all() {
  local b
  for b in "${kube_bins[@]}" coredns pause.tar; do [[ -e "${assets}/${b}" ]] || return 1; done
  # The pause image is rebuilt when its source changes.
  [[ ! "${repo_root}/hack/pause/main.go" -nt "${assets}/pause.tar" ]]
}
if [[ -f "${stamp}" ]] && have_all; then
  echo "${assets}"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/cxop-cluster-build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
mkdir -p "${assets}"
# Builds must not see the project's own GOFLAGS (e.g. -mod=vendor) or workspace.
export GOFLAGS="-mod=mod" GOWORK=off GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
go_minor="$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"

# --- node components --------------------------------------------------------
# Same module layout as setup-envtest.sh (k8s.io/kubernetes plus a replace of
# every staging repo by its published release), so the module graph and the
# build cache of the API server are reused.
build_kube() {
  local mod="${work}/kube" gomod_file
  mkdir -p "${mod}"
  gomod_file="$(cd "${mod}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    printf 'module cxop.local/cluster-kube\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "${go_minor}" "${K8S_VERSION}"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 '"${staging_version}"'#p' "${gomod_file}"
    echo ")"
  } >"${mod}/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${kube_bins[@]}"
    printf ')\n'
  } >"${mod}/tools.go"
  log "resolving k8s.io/kubernetes ${K8S_VERSION} modules"
  (cd "${mod}" && go mod tidy -e >/dev/null 2>"${work}/tidy.log") || { cat "${work}/tidy.log" >&2; return 1; }

  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg="k8s.io/component-base/version" ldflags="-s -w"
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  log "building ${kube_bins[*]} ${K8S_VERSION} (one go build so shared packages compile once)"
  mkdir -p "${work}/out"
  (cd "${mod}" && CGO_ENABLED=0 go build -trimpath -tags providerless -ldflags "${ldflags}" \
    -o "${work}/out/" "${kube_bins[@]/#/k8s.io/kubernetes/cmd/}")
  mv -f "${work}/out/"* "${assets}/"
}

# --- CoreDNS ----------------------------------------------------------------
# Only the plugins a cluster-internal resolver needs: no forward (nothing
# outside the cluster's network namespace may be queried), no cloud backends.
# The list is in the order of CoreDNS' plugin.cfg, which is the order plugins
# run in.
build_coredns() {
  local mod="${work}/coredns"
  mkdir -p "${mod}"
  printf 'module cxop.local/cluster-coredns\n\ngo %s\n\nrequire github.com/coredns/coredns %s\n' \
    "${go_minor}" "${COREDNS_VERSION}" >"${mod}/go.mod"
  cat >"${mod}/main.go" <<'GO'
// Command coredns is CoreDNS with only the plugins the cxop cluster uses.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "bind", "ready", "health", "errors", "log",
		"loadbalance", "cache", "kubernetes",
	}
}

func main() { coremain.Run() }
GO
  log "resolving CoreDNS ${COREDNS_VERSION} modules"
  (cd "${mod}" && go mod tidy >/dev/null 2>"${work}/tidy-coredns.log") || { cat "${work}/tidy-coredns.log" >&2; return 1; }
  log "building CoreDNS ${COREDNS_VERSION}"
  (cd "${mod}" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" \
    -o "${assets}/coredns.tmp" .)
  mv -f "${assets}/coredns.tmp" "${assets}/coredns"
}

# --- pause image ------------------------------------------------------------
# containerd's sandbox_image; hack/cluster/up.sh imports it so nothing is
# ever pulled.
build_pause() {
  local mod="${work}/pause"
  mkdir -p "${mod}"
  cp "${repo_root}/hack/pause/main.go" "${mod}/"
  printf 'module cxop.local/pause\n\ngo %s\n' "${go_minor}" >"${mod}/go.mod"
  log "building the pause image"
  (cd "${mod}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${work}/pause-bin" .)
  # hack/image packs it the way the project's own image is packed; it is part
  # of the project's module, whose go.mod must not change here.
  (cd "${repo_root}" && GOFLAGS=-mod=readonly go run ./hack/image -binary "${work}/pause-bin" \
    -entrypoint /pause -ref registry.k8s.io/pause:cxop -user 65535:65535 -ca-certificates=false \
    -out "${assets}/pause.tar" >/dev/null)
}

for b in "${kube_bins[@]}"; do [[ -x "${assets}/${b}" ]] || { build_kube; break; }; done
[[ -x "${assets}/coredns" ]] || build_coredns
have_all || build_pause
for b in kube-apiserver etcd kubectl; do ln -sfn "${envtest}/${b}" "${assets}/${b}"; done

"${assets}/kubelet" --version >&2
# sed, not head: head exits after one line and, under pipefail, the
# second line coredns writes then dies of SIGPIPE and fails the script.
"${assets}/coredns" -version | sed -n 1p >&2
printf '%s\n' "${K8S_VERSION} ${COREDNS_VERSION}" >"${stamp}"
echo "${assets}"
