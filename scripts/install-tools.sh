#!/usr/bin/env bash
# Idempotent installer for the deployment tool chain used by tests/deploy and docs/DEPLOY.md.
#   - helm (built from the Go module proxy with `go install`) into a project-local bin dir
#   - kubernetes-validate (PyPI) into the project venv, then a smoke check
# Usage: scripts/install-tools.sh            (installs into .cache/bin)
#        BIN_DIR=/some/dir HELM_VERSION=v3.22.0 scripts/install-tools.sh
# Re-running is cheap: nothing is rebuilt when the pinned version is already present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/.cache/bin}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KV_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

mkdir -p "$BIN_DIR"

log() { printf '[install-tools] %s\n' "$*" >&2; }

install_helm() {
  local helm="$BIN_DIR/helm" stamp="$BIN_DIR/.helm.stamp"
  # Same -X flags as helm's Makefile: without the k8s version ones `helm template` assumes Kubernetes v1.20
  # and rejects charts with kubeVersion >=1.29. client-go v0.37 in helm v3.22.0 -> Kubernetes 1.37.
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR:-37}"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR:-37}"
  if [[ -x "$helm" && -f "$stamp" && "$(cat "$stamp")" == "$HELM_VERSION $ldflags" ]]; then
    log "helm $HELM_VERSION already at $helm"
    return
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "ERROR: go is required to build helm (https://go.dev/dl); or put a helm $HELM_VERSION binary at $helm"
    exit 1
  fi
  log "building helm $HELM_VERSION with go install (about 5 minutes on 2 cores the first time)"
  GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  printf '%s' "$HELM_VERSION $ldflags" >"$stamp"
  "$helm" version --short
}

install_kubernetes_validate() {
  if ! "$PY" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    log "installing kubernetes-validate==$KV_VERSION into $("$PY" -c 'import sys;print(sys.prefix)')"
    "$PY" -m pip install --quiet "kubernetes-validate==$KV_VERSION"
  fi
  # smoke check: a valid Service validates strictly against the oldest and newest versions the tests use
  local tmp
  tmp="$(mktemp)"
  cat >"$tmp" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: smoke}
spec: {ports: [{name: grpc, port: 50051}], selector: {app: smoke}}
YAML
  local kv
  kv="$(dirname "$PY")/kubernetes-validate"
  for k in 1.29.0 1.33.0; do
    "$kv" --strict -k "$k" --quiet "$tmp" >/dev/null
  done
  rm -f "$tmp"
  log "kubernetes-validate ok ($("$PY" -c 'import importlib.metadata as m;print(m.version("kubernetes-validate"))'))"
}

# Kubernetes binaries are not packaged anywhere, and `go install k8s.io/kubernetes/cmd/X@v` is refused (replace
# directives), so they are built from a wrapper module that maps the staging modules to their published v0.x
# versions. build_kube BIN... builds the named cmd/ binaries of one version into $BIN_DIR in one `go build`.
KUBE_VERSION="${KUBE_VERSION:-${KUBE_APISERVER_VERSION:-v1.33.0}}"
build_kube() {
  local ver="$KUBE_VERSION" minor todo=() b
  for b in "$@"; do
    if [[ -x "$BIN_DIR/$b" && -f "$BIN_DIR/$b.stamp" && "$(cat "$BIN_DIR/$b.stamp")" == "$ver" ]]; then
      log "$b $ver already at $BIN_DIR/$b"
    else
      todo+=("$b")
    fi
  done
  [[ ${#todo[@]} -eq 0 ]] && return
  local work
  work="$(mktemp -d)"
  minor="${ver#v1.}"
  (
    cd "$work"
    go mod download -json "k8s.io/kubernetes@$ver" >/dev/null
    local modfile
    modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$ver.mod"
    {
      printf 'module kbuild\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$ver"
      grep -E '^\s+k8s.io/[a-z0-9-]+ => ./staging' "$modfile" | awk -v v="v0.$minor" '{print "\t"$1" => "$1" "v}'
      printf ')\n'
    } >go.mod
    {
      printf 'package main\n\nimport (\n'
      for b in "${todo[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s/app"\n' "$b"; done
      printf ')\n\nfunc main() {}\n'
    } >tools.go
    [[ " ${todo[*]} " == *" kubectl "* ]] && sed -i 's#k8s.io/kubernetes/cmd/kubectl/app#k8s.io/kubectl/pkg/cmd#' tools.go
    go mod tidy >/dev/null 2>&1
    log "building ${todo[*]} $ver (about 4 minutes a binary on 2 cores, less when built together)"
    # version ldflags as in kubernetes' hack/lib/version.sh: helm checks the chart's kubeVersion against them
    local ld="-s -w" pkgs=()
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    for b in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN_DIR/" "${pkgs[@]}"
  )
  rm -rf "$work"
  for b in "${todo[@]}"; do printf '%s' "$ver" >"$BIN_DIR/$b.stamp"; done
}

install_etcd() {
  if ! command -v etcd >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
    else
      log "WARNING: etcd not found (apt-get install etcd-server); tests/deploy/test_ops.py will skip"
    fi
  fi
}

install_kube_apiserver() {
  # A real kube-apiserver (+ etcd 3.4 from apt) for tests/deploy/test_ops.py. About 4 minutes on 2 cores.
  if [[ "${SKIP_KUBE_APISERVER:-0}" == "1" ]]; then log "SKIP_KUBE_APISERVER=1: not building kube-apiserver"; return; fi
  install_etcd
  build_kube kube-apiserver
}

# `scripts/install-tools.sh node`: everything a single-node cluster needs (scripts/k8s/cluster.sh): the other
# control-plane binaries, a kubelet and kube-proxy, and containerd + runc + CNI plugins + image builders from apt.
install_node() {
  install_etcd
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    local pkgs=() p
    for p in containerd runc containernetworking-plugins buildah podman mmdebstrap iptables conntrack iproute2 socat; do
      dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    if [[ ${#pkgs[@]} -gt 0 ]]; then
      log "apt-get install ${pkgs[*]}"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
  fi
  build_kube kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
}

install_helm
install_kubernetes_validate
install_kube_apiserver
[[ "${1:-}" == "node" ]] && install_node
log "done: export HELM=$BIN_DIR/helm"
