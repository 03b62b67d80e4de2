#!/usr/bin/env bash
# Starts tritonserver with the flags from the chart/CMD. TRITON_WORLD_SIZE (tensor-parallel size) > 1 launches one
# MPI rank per GPU the way tensorrtllm_backend's launch_triton_server.py does: rank 0 serves HTTP/gRPC/metrics,
# the other ranks only run the TensorRT-LLM engine shards (they get --model-control-mode=explicit and no endpoints).
set -euo pipefail
WORLD_SIZE="${TRITON_WORLD_SIZE:-1}"
BACKEND_DIR="${TRITON_BACKEND_DIR:-/opt/tritonserver/backends}"
# The python backend chmods its stub every time it starts one (python_backend's stub launcher), so the stub must be
# ours on a writable filesystem. With a non-root uid and a read-only root (the chart's securityContext) run the
# python backend from a copy under /tmp (an emptyDir); the other backends are linked, not copied.
STUB="$BACKEND_DIR/python/triton_python_backend_stub"
if [[ -f "$STUB" && ! -O "$STUB" ]]; then
  copy="${TMPDIR:-/tmp}/triton-backends"
  rm -rf "$copy" && mkdir -p "$copy"
  for b in "$BACKEND_DIR"/*; do
    if [[ "${b##*/}" == python ]]; then cp -r "$b" "$copy/python"; else ln -s "$b" "$copy/${b##*/}"; fi
  done
  BACKEND_DIR="$copy"
fi
BACKENDS=(--backend-directory="$BACKEND_DIR")
if [[ -n "${TRITON_CACHE_DIR:-}" ]]; then BACKENDS+=(--cache-directory="$TRITON_CACHE_DIR"); fi

if [[ "$WORLD_SIZE" == "1" ]]; then
  exec tritonserver "${BACKENDS[@]}" "$@"
fi

# non-leader ranks serve the same repositories but load only the TensorRT-LLM models (<name>_trtllm)
repos=() trt=()
for a in "$@"; do
  case "$a" in
    --model-repository=*) repos+=("$a") ;;
    --load-model=*_trtllm) trt+=("$a") ;;
  esac
done
args=()
for ((rank = 0; rank < WORLD_SIZE; rank++)); do
  if ((rank > 0)); then args+=(":"); fi
  args+=(-n 1 tritonserver "${BACKENDS[@]}" "--backend-config=python,shm-region-prefix-name=prefix${rank}_"
         "--disable-auto-complete-config")
  if ((rank == 0)); then
    args+=("$@")
  else
    args+=("${repos[@]}" --model-control-mode=explicit "${trt[@]}"
           --allow-http=false --allow-grpc=false --allow-metrics=false --log-info=false)
  fi
done
# --oversubscribe/--bind-to none: one pod, the GPUs it was given; OMPI_MCA_plm_rsh_agent=false keeps MPI local.
exec mpirun --oversubscribe --bind-to none "${args[@]}"
