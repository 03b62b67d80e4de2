#!/usr/bin/env bash
# Build the images of docker/Dockerfile without a Docker engine (buildah), tagged as the chart expects
# (<registry>/<repositoryPrefix>/<component>:<appVersion>), and optionally load them into containerd's image store.
#
#   scripts/images.sh build            # every CPU target of docker/images.yaml (make images)
#   scripts/images.sh export           # the built images into containerd (namespace k8s.io) for a kubelet
#   scripts/images.sh prune            # delete dangling images (build leaves the ones its new tags replaced)
#   TARGETS="gateway vad" scripts/images.sh build
#
# The base: upstream bases are not reachable here, so by default a Debian 12 base with Python 3.11 is made from
# Debian's packages (mmdebstrap) and passed as the PYTHON_IMAGE build argument. Production builds keep the
# Dockerfile's pinned upstream bases (PYTHON_IMAGE/PYTHON_DIGEST); set BASE_IMAGE to use any other base.
# Torch is left out of the CPU images (TORCH_VERSION=): the embedded services never import it.
# GPU targets need their CUDA / Triton bases: TARGETS=tts-gpu BASE_IMAGE=... CUDA_IMAGE=... builds one where they
# can be pulled.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${WORK:-$ROOT/.cache/images}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
LOCAL_BASE="localhost/stepaudio/base:$SUITE"
BASE_IMAGE="${BASE_IMAGE:-}"
NAMESPACE="${CONTAINERD_NAMESPACE:-k8s.io}"
CONTAINERD_ADDRESS="${CONTAINERD_ADDRESS:-/run/stepaudio-k8s/containerd.sock}"

log() { printf '[images] %s\n' "$*" >&2; }

# images.yaml -> "target image" lines for the requested targets (default: every cpu variant)
image_list() {
  "$PY" - "$@" <<'PYEOF'
import sys, yaml
doc = yaml.safe_load(open("docker/images.yaml"))
chart = yaml.safe_load(open("charts/stepaudio/Chart.yaml"))
values = yaml.safe_load(open("charts/stepaudio/values.yaml"))
registry = values["image"]["registry"]
tag = values["image"]["tag"] or chart["appVersion"]
wanted = sys.argv[1:]
known = {i["target"]: i for i in doc["images"]}
for t in wanted:
    if t not in known:
        sys.exit(f"unknown target {t!r}; docker/images.yaml has {sorted(known)}")
for img in doc["images"]:
    if (img["target"] in wanted) if wanted else img["variant"] == "cpu":
        print(img["target"], f"{registry}/{img['name']}:{tag}")
PYEOF
}

make_base() {
  if [[ -n "$BASE_IMAGE" ]]; then echo "$BASE_IMAGE"; return; fi
  if buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then echo "$LOCAL_BASE"; return; fi
  mkdir -p "$WORK"
  log "making $LOCAL_BASE from Debian's packages (mmdebstrap, about a minute)"
  # python3 as /usr/bin/python (the Dockerfile's `python`), passwd (groupadd/useradd), libgomp1 (onnxruntime).
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,passwd,ca-certificates,libgomp1 \
    "$SUITE" "$WORK/base.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" >&2
  local c
  c="$(buildah from scratch)"
  buildah add --quiet "$c" "$WORK/base.tar" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd /bin/bash "$c"
  buildah commit --quiet "$c" "$LOCAL_BASE" >/dev/null
  buildah rm "$c" >/dev/null
  rm -f "$WORK/base.tar"
  echo "$LOCAL_BASE"
}

build() {
  local base lines
  base="$(make_base)"
  lines="$(image_list ${TARGETS:-})"
  # The build's RUN steps reach the package registries with this machine's network and CA bundle (mounted,
  # not copied: the images keep their own trust store).
  local args=(--layers --network host --format docker -f docker/Dockerfile
              --build-arg "PYTHON_IMAGE=$base" --build-arg TORCH_VERSION=)
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && args+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  local target image t0
  while read -r target image; do
    t0=$SECONDS
    log "building $image (--target $target)"
    buildah bud --quiet "${args[@]}" --target "$target" -t "$image" . >"$WORK/build-$target.log" 2>&1 \
      || { tail -30 "$WORK/build-$target.log" >&2; log "FAILED: $target (log $WORK/build-$target.log)"; exit 1; }
    log "built $image in $((SECONDS - t0)) s"
  done <<<"$lines"
  prune
}

# A rebuild moves each tag to a new image and leaves the old one, with its layer chain, untagged: about 4 GB per
# build of every target, which filled a CI disk once. The tagged images and their layers (the build cache) stay.
prune() {
  local before after
  before="$(df -Pm /var/lib/containers 2>/dev/null | awk 'NR==2 {print $4}')"
  buildah rmi --prune >/dev/null 2>&1 || log "warning: buildah rmi --prune failed"
  after="$(df -Pm /var/lib/containers 2>/dev/null | awk 'NR==2 {print $4}')"
  [[ -n "$before" && -n "$after" ]] && log "pruned dangling images: $((after - before)) MiB freed, $((after / 1024)) GiB free"
  return 0
}

export_images() {
  local lines images=()
  lines="$(image_list ${TARGETS:-})"
  while read -r _ image; do images+=("$image"); done <<<"$lines"
  [[ -S "$CONTAINERD_ADDRESS" ]] || { log "no containerd at $CONTAINERD_ADDRESS (scripts/k8s/cluster.sh up starts one)"; exit 1; }
  mkdir -p "$WORK"
  log "exporting ${#images[@]} images to containerd ($CONTAINERD_ADDRESS, namespace $NAMESPACE)"
  # one multi-image archive: the layers the images share are written once
  podman save --quiet -m --format docker-archive -o "$WORK/images.tar" "${images[@]}"
  ctr --address "$CONTAINERD_ADDRESS" -n "$NAMESPACE" images import --no-unpack=false "$WORK/images.tar" >/dev/null
  rm -f "$WORK/images.tar"
  ctr --address "$CONTAINERD_ADDRESS" -n "$NAMESPACE" images ls -q | grep -F -f <(printf '%s\n' "${images[@]}") >&2
}

need_tools() {
  local p missing=()
  for p in buildah podman mmdebstrap; do command -v "$p" >/dev/null || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    log "ERROR: needs ${missing[*]} (Debian/Ubuntu: apt-get install buildah podman mmdebstrap)"; exit 1
  fi
}

case "${1:-build}" in
  build) need_tools; mkdir -p "$WORK"; build ;;
  export) need_tools; export_images ;;
  list) image_list ${TARGETS:-} ;;
  prune) need_tools; prune ;;
  base) need_tools; make_base ;;
  *) echo "usage: $0 build|export|list|base|prune" >&2; exit 2 ;;
esac
