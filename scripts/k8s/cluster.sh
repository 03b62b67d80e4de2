#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, no Docker and no VM: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a kubelet on containerd + runc (cgroupfs), the CNI bridge plugin and
# kube-proxy (iptables), plus CoreDNS as a pod. Pods live on the bridge cni0 (10.244.0.0/24, made here); the API
# server and kubelet listen on the bridge address 10.244.0.1 only; Services are 10.96.0.0/16. Pods have no route
# off the machine (no masquerade).
#
#   scripts/k8s/cluster.sh up        # idempotent: starts what is not running, waits for the node and DNS
#   scripts/k8s/cluster.sh status    # each component, its pid and its log
#   scripts/k8s/cluster.sh down      # stops everything, removes pods, the bridge and kube-proxy's rules
#   scripts/k8s/cluster.sh purge     # down, then deletes the state (etcd data, images, certificates)
#   eval "$(scripts/k8s/cluster.sh env)"   # KUBECONFIG and CONTAINERD_ADDRESS for this shell
#
# Binaries: scripts/install-tools.sh node (kube binaries from the Go module proxy, the rest from apt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN_DIR:-$ROOT/.cache/bin}"
STATE="${K8S_STATE:-/var/lib/stepaudio-k8s}"   # etcd, containerd, kubelet, logs: outside the checkout
RUN_DIR="/run/stepaudio-k8s"                    # containerd's socket and state (short path, tmpfs)
LOGS="$STATE/logs"
NODE="${K8S_NODE_NAME:-stepaudio-node}"
BRIDGE=cni0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
ETCD_PORT=12379
API="https://$NODE_IP:6443"
SOCK="$RUN_DIR/containerd.sock"
PAUSE_IMAGE="localhost/stepaudio/pause:3.10"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
COREDNS_IMAGE="localhost/stepaudio/coredns:${COREDNS_VERSION#v}"
REDIS_IMAGE="localhost/stepaudio/redis:7"
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
pidfile() { echo "$STATE/pids/$1.pid"; }
running() { local p; p="$(pidfile "$1")"; [[ -f "$p" ]] && kill -0 "$(cat "$p")" 2>/dev/null; }

start() {  # start NAME CMD...: runs CMD in its own session, logging to $LOGS/NAME.log
  local name="$1"; shift
  if running "$name"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
  log "$name started (pid $!, log $LOGS/$name.log)"
}

wait_for() {  # wait_for SECONDS WHAT CMD...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what (logs in $LOGS)"
    sleep 1
  done
}

preflight() {
  local b missing=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [[ -x "$BIN/$b" ]] || missing+=("$b")
  done
  for b in etcd containerd runc buildah mmdebstrap iptables conntrack; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  [[ -x /usr/lib/cni/bridge ]] || missing+=("containernetworking-plugins")
  [[ ${#missing[@]} -eq 0 ]] || die "missing ${missing[*]}: run scripts/install-tools.sh node"
  [[ "$(id -u)" == 0 ]] || die "the kubelet, containerd and kube-proxy need root"
}

pki() {
  local d="$STATE/pki"
  [[ -f "$d/apiserver.crt" ]] && return
  mkdir -p "$d"
  log "making the cluster CA, the API server's certificate and the service-account key ($d)"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 3650 \
    -subj "/CN=stepaudio-local-cluster-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/apiserver.key" -out "$d/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:10.96.0.1,IP:$NODE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  # One admin identity for the host-side components and the operator (system:masters).
  printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 24)" >"$d/tokens.csv"
  chmod 600 "$d"/*.key "$d/tokens.csv"
}

kubeconfig() {
  local token
  token="$(cut -d, -f1 "$STATE/pki/tokens.csv")"
  cat >"$KUBECONFIG_FILE" <<KC
apiVersion: v1
kind: Config
clusters: [{name: stepaudio-local, cluster: {server: "$API", certificate-authority: "$STATE/pki/ca.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: stepaudio-local, context: {cluster: stepaudio-local, user: admin}}]
current-context: stepaudio-local
KC
  chmod 600 "$KUBECONFIG_FILE"
}

network() {
  sysctl -q -w net.ipv4.ip_forward=1
  modprobe br_netfilter 2>/dev/null || true
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$STATE/cni/net.d"
  # bridge + host-local IPAM on the subnet made above; no ipMasq: pods reach this node and each other only.
  cat >"$STATE/cni/net.d/10-stepaudio.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "stepaudio",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP", "rangeStart": "10.244.0.10"}]],
              "routes": [{"dst": "$SERVICE_CIDR"}], "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

control_plane() {
  local d="$STATE/pki"
  start etcd etcd --name "$NODE" --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "$NODE=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" --client-ca-file="$d/ca.crt" \
    --token-auth-file="$d/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-key-file="$d/sa.key" --service-account-signing-key-file="$d/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-preferred-address-types=InternalIP --v=1
  wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" --leader-elect=false \
    --cluster-signing-cert-file="$d/ca.crt" --cluster-signing-key-file="$d/ca.key" \
    --bind-address=127.0.0.1 --v=1
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --leader-elect=false --bind-address=127.0.0.1 --v=1
}

runtime() {
  mkdir -p "$RUN_DIR" "$STATE/containerd"
  cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$RUN_DIR/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_unprivileged_ports = true
  # Lowering oom_score_adj (the kubelet gives sandboxes -998) is refused here even to root: clamp to containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for 60 "containerd socket" ctr --address "$SOCK" version
}

ctr_has() { ctr --address "$SOCK" -n k8s.io images ls -q | grep -qx "$1"; }

infra_images() {
  # pause (our own, static C), CoreDNS (Go module proxy) and Redis (Debian's redis-server): upstream images
  # are not reachable here. Built once with buildah, imported into containerd's k8s.io namespace.
  mkdir -p "$STATE/build"
  local img
  for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$REDIS_IMAGE"; do
    ctr_has "$img" && continue
    buildah inspect --type image "$img" >/dev/null 2>&1 || build_infra_image "$img"
    import_image "$img"
  done
}

build_infra_image() {
  local c
  case "$1" in
    "$PAUSE_IMAGE")
      gcc -static -O2 -o "$STATE/build/pause" "$ROOT/infra/k8s/pause.c"
      c="$(buildah from scratch)"
      buildah copy --quiet "$c" "$STATE/build/pause" /pause >/dev/null
      buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c" ;;
    "$COREDNS_IMAGE")
      if [[ ! -x "$BIN/coredns" || "$(cat "$BIN/coredns.stamp" 2>/dev/null)" != "$COREDNS_VERSION" ]]; then
        log "building CoreDNS $COREDNS_VERSION (go install, a few minutes the first time)"
        GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
        echo "$COREDNS_VERSION" >"$BIN/coredns.stamp"
      fi
      c="$(buildah from scratch)"
      buildah copy --quiet "$c" "$BIN/coredns" /coredns >/dev/null
      buildah config --entrypoint '["/coredns"]' --user 65532:65532 "$c" ;;
    "$REDIS_IMAGE")
      c="$(buildah from "$(bash "$ROOT/scripts/images.sh" base)")"
      buildah run --network host "$c" -- sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null && rm -rf /var/lib/apt/lists/*'
      buildah config --entrypoint '["redis-server"]' --cmd '[]' "$c" ;;
  esac
  buildah commit --quiet "$c" "$1" >/dev/null
  buildah rm "$c" >/dev/null
}

import_image() {
  local tar="$STATE/build/image.tar"
  podman save --quiet --format docker-archive -o "$tar" "$1"
  ctr --address "$SOCK" -n k8s.io images import "$tar" >/dev/null
  rm -f "$tar"
  log "image $1 in containerd"
}

node() {
  mkdir -p "$STATE/kubelet"
  cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failSwapOn: false
# The API server reaches this kubelet (logs, exec, port-forward) on the bridge address only.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
enforceNodeAllocatable: []
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
maxPods: 60
YAML
  start kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" --kubeconfig="$KUBECONFIG_FILE" \
    --root-dir="$STATE/kubelet/root" --cert-dir="$STATE/kubelet/pki" --hostname-override="$NODE" \
    --node-ip="$NODE_IP" --v=1
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG_FILE" --hostname-override="$NODE" \
    --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --bind-address="$NODE_IP" --conntrack-max-per-core=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
  wait_for 120 "node $NODE Ready" kubectl wait --for=condition=Ready "node/$NODE" --timeout=5s
}

dns() {
  sed -e "s/@DNS_IP@/$DNS_IP/" -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#" "$ROOT/infra/k8s/coredns.yaml" | kubectl apply -f - >/dev/null
  wait_for 180 "CoreDNS ready" kubectl -n kube-system rollout status deploy/coredns --timeout=5s
}

up() {
  preflight
  mkdir -p "$STATE/pids" "$LOGS"
  local t0=$SECONDS
  pki; kubeconfig; network; control_plane; runtime; infra_images; node; dns
  log "cluster up in $((SECONDS - t0)) s: export KUBECONFIG=$KUBECONFIG_FILE"
  status
}

status() {
  local name
  for name in "${COMPONENTS[@]}"; do
    if running "$name"; then
      printf '%-24s running  pid %-8s log %s\n' "$name" "$(cat "$(pidfile "$name")")" "$LOGS/$name.log"
    else
      printf '%-24s stopped  %-12s log %s\n' "$name" "" "$LOGS/$name.log"
    fi
  done
  [[ -f "$KUBECONFIG_FILE" ]] && running kube-apiserver && kubectl get nodes -o wide 2>/dev/null || true
}

stop() {
  local name="$1" p
  p="$(pidfile "$name")"
  [[ -f "$p" ]] || return 0
  if kill -0 "$(cat "$p")" 2>/dev/null; then
    kill -TERM "$(cat "$p")" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$(cat "$p")" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$(cat "$p")" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$p"
}

flush_kube_chains() {  # the chains the kubelet and kube-proxy leave behind (canaries, KUBE-FIREWALL, marks)
  local cmd="$1" t rule chain
  command -v "$cmd" >/dev/null || return 0
  for t in nat filter mangle; do
    { "$cmd" -t "$t" -S 2>/dev/null || true; } | { grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' || true; } | while read -r rule; do
      # shellcheck disable=SC2086
      "$cmd" -t "$t" ${rule/-A/-D} 2>/dev/null || true
    done
    for chain in $("$cmd" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
      "$cmd" -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$cmd" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
      "$cmd" -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

down() {
  stop kube-proxy
  stop kubelet
  if [[ -S "$SOCK" ]]; then  # every pod's containers and sandboxes, so no process outlives the cluster
    local ids
    ids="$(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for id in $ids; do ctr --address "$SOCK" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $ids; do ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true; done
    ids="$(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null || true)"
    for id in $ids; do ctr --address "$SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  stop kube-scheduler; stop kube-controller-manager; stop kube-apiserver; stop etcd
  # what the kubelet and containerd mounted, the pods' network namespaces, the bridge, kube-proxy's rules
  { grep -E " ($STATE|$RUN_DIR)/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}' || true); do ip netns delete "$ns" 2>/dev/null || true; done
  [[ -x "$BIN/kube-proxy" ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  flush_kube_chains iptables; flush_kube_chains ip6tables
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" || true
  rm -rf "$STATE/cni/ipam"
  log "cluster down (state kept in $STATE; purge deletes it)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  purge) down; rm -rf "$STATE" "$RUN_DIR"; log "state removed" ;;
  status) status ;;
  env) printf 'export KUBECONFIG=%q CONTAINERD_ADDRESS=%q\n' "$KUBECONFIG_FILE" "$SOCK" ;;
  *) echo "usage: $0 up|down|purge|status|env" >&2; exit 2 ;;
esac
