#!/usr/bin/env bash
# setup-envtest.sh builds the control plane that envtest and `cxop dev` run:
# kube-apiserver and kubectl from the k8s.io/kubernetes module, and etcd from
# go.etcd.io/etcd/server/v3, all through the Go module proxy (no release
# binaries can be downloaded on the machines this project is built on).
#
# The binaries go into a cache directory outside the repository, keyed by
# version, so a second run returns in well under a second. The directory is
# printed as the LAST line of output; use it as KUBEBUILDER_ASSETS:
#
#   export KUBEBUILDER_ASSETS="$(hack/setup-envtest.sh | tail -n 1)"
#
# Environment:
#   CXOP_CACHE     cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/cxop)
#   K8S_VERSION    Kubernetes version (default: derived from k8s.io/api in go.mod)
#   ETCD_VERSION   etcd version (default below; the 3.6 line Kubernetes 1.37 is tested with)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"

if [[ -z "${K8S_VERSION:-}" ]]; then
  # k8s.io/api v0.37.2 is released together with Kubernetes v1.37.2.
  api_version="$(cd "${repo_root}" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' k8s.io/api 2>/dev/null || true)"
  if [[ ! "${api_version}" =~ ^v0\.([0-9]+)\.([0-9]+)$ ]]; then
    echo "setup-envtest: cannot derive the Kubernetes version from k8s.io/api ${api_version:-<missing>} in go.mod" >&2
    exit 1
  fi
  K8S_VERSION="v1.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
fi
staging_version="v0.${K8S_VERSION#v1.}"

cache_root="${CXOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cxop}"
assets="${cache_root}/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-$(go env GOOS)-$(go env GOARCH)"
stamp="${assets}/.complete"

if [[ -f "${stamp}" && -x "${assets}/kube-apiserver" && -x "${assets}/etcd" && -x "${assets}/kubectl" ]]; then
  echo "${assets}"
  exit 0
fi

log() { echo "setup-envtest: $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/cxop-envtest.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
mkdir -p "${assets}"
# Builds must not see the project's own GOFLAGS (e.g. -mod=vendor) or workspace.
export GOFLAGS="-mod=mod" GOWORK=off GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# --- kube-apiserver and kubectl -------------------------------------------
# k8s.io/kubernetes requires every k8s.io/<staging repo> at v0.0.0 and replaces
# it with ./staging/...; a module that depends on it must replace each of them
# with the published v0.<minor>.<patch> release.
build_kube() {
  local mod="${work}/kube"
  mkdir -p "${mod}"
  local gomod_file
  gomod_file="$(cd "${mod}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module cxop.local/envtest-kube"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 '"${staging_version}"'#p' "${gomod_file}"
    echo ")"
  } >"${mod}/go.mod"
  cat >"${mod}/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "resolving k8s.io/kubernetes ${K8S_VERSION} modules"
  (cd "${mod}" && go mod tidy -e >/dev/null 2>"${work}/tidy.log") || { cat "${work}/tidy.log" >&2; return 1; }

  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w"
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  # kubectl reports its own version through the same package.
  local bin
  for bin in kube-apiserver kubectl; do
    log "building ${bin} ${K8S_VERSION} (cold: several minutes)"
    (cd "${mod}" && CGO_ENABLED=0 go build -trimpath -tags providerless -ldflags "${ldflags}" \
      -o "${assets}/${bin}.tmp" "k8s.io/kubernetes/cmd/${bin}")
    mv -f "${assets}/${bin}.tmp" "${assets}/${bin}"
  done
}

# --- etcd -----------------------------------------------------------------
build_etcd() {
  local mod="${work}/etcd"
  mkdir -p "${mod}"
  cat >"${mod}/go.mod" <<GOMOD
module cxop.local/envtest-etcd

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat >"${mod}/main.go" <<'GO'
// Command etcd is the etcd server, built from its Go module for envtest.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "resolving etcd ${ETCD_VERSION} modules"
  (cd "${mod}" && go mod tidy >/dev/null 2>"${work}/tidy-etcd.log") || { cat "${work}/tidy-etcd.log" >&2; return 1; }
  local ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
  log "building etcd ${ETCD_VERSION}"
  (cd "${mod}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${assets}/etcd.tmp" .)
  mv -f "${assets}/etcd.tmp" "${assets}/etcd"
}

[[ -x "${assets}/etcd" ]] || build_etcd
[[ -x "${assets}/kube-apiserver" && -x "${assets}/kubectl" ]] || build_kube

"${assets}/kube-apiserver" --version >&2
# sed, not head: under pipefail a writer outliving head fails of SIGPIPE.
"${assets}/etcd" --version | sed -n 1p >&2
printf '%s\n' "${K8S_VERSION} ${ETCD_VERSION}" >"${stamp}"
echo "${assets}"
