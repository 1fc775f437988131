#!/usr/bin/env bash
# GPU verification of the onnxruntime (CUDA EP, TensorRT EP) and native TensorRT backends,
# for whoever has an NVIDIA GPU (the development and CI machines have none, so these paths
# are written but never run there). Steps:
#
#   1. set-up: scripts/setup.sh (.venv), then the GPU builds into .venv: CUDA torch (same
#      version as requirements/runtime.txt), onnxruntime-gpu instead of onnxruntime, and
#      TensorRT 10 (tensorrt-cu12);
#   2. export hiera-tiny (random weights) at each size with fp16 variants and build native
#      TensorRT engines (sam2s export --fp16 --tensorrt);
#   3. the GPU-marked tests (pytest -m gpu) plus the ONNX/onnxruntime/TensorRT test files;
#   4. benchmarks/bench_backends.py on cuda (torch, onnxruntime, tensorrt, official), fp32
#      and fp16;
#   5. a report: $OUT_DIR/report.md (GPU, versions, test summary, benchmark tables) with the
#      raw logs and JSON beside it.
#
# Usage: scripts/gpu_verify.sh [--skip-setup]
# Environment (defaults in brackets):
#   OUT_DIR           report folder [gpu_verify]
#   SIZES             image sizes to export and benchmark ["512 1024"]
#   TORCH_CUDA_INDEX  pip index of CUDA torch wheels [https://download.pytorch.org/whl/cu128]
#   ORT_GPU_SPEC      onnxruntime-gpu requirement [onnxruntime-gpu==<onnxruntime pin>]
#   TENSORRT_SPEC     TensorRT requirement [tensorrt-cu12>=10,<11]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT_DIR="${OUT_DIR:-gpu_verify}"
SIZES="${SIZES:-512 1024}"
TORCH_CUDA_INDEX="${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}"
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements/runtime.txt; }
ORT_GPU_SPEC="${ORT_GPU_SPEC:-onnxruntime-gpu==$(pin onnxruntime)}"
TENSORRT_SPEC="${TENSORRT_SPEC:-tensorrt-cu12>=10,<11}"
SKIP_SETUP=0
for arg in "$@"; do
  case "$arg" in
    --skip-setup) SKIP_SETUP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (usage: scripts/gpu_verify.sh [--skip-setup])" >&2; exit 2 ;;
  esac
done

log() { printf '[gpu_verify] %s\n' "$*"; }
die() { printf '[gpu_verify] ERROR: %s\n' "$*" >&2; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this script needs an NVIDIA GPU and driver"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

# ---- 1. set-up ------------------------------------------------------------------------------
if [[ "$SKIP_SETUP" == 0 ]]; then
  log "set-up: scripts/setup.sh"
  bash scripts/setup.sh
  log "GPU packages: torch==$(pin torch) from $TORCH_CUDA_INDEX, $ORT_GPU_SPEC, $TENSORRT_SPEC"
  "$PY" -m pip install --force-reinstall --no-deps "torch==$(pin torch)" --index-url "$TORCH_CUDA_INDEX"
  "$PY" -m pip install "torch==$(pin torch)" --index-url "$TORCH_CUDA_INDEX"  # its CUDA runtime wheels
  "$PY" -m pip uninstall -y onnxruntime
  "$PY" -m pip install "$ORT_GPU_SPEC" "$TENSORRT_SPEC"
fi
"$PY" - <<'EOF' | tee "$OUT_DIR/versions.txt"
import onnxruntime, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except ImportError as exc:
    print("tensorrt missing:", exc)
EOF
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || die "torch does not see the GPU (see $OUT_DIR/versions.txt)"

# ---- 2. export + engines ----------------------------------------------------------------------
STATUS=0
for size in $SIZES; do
  log "export ${size}² (fp32 + fp16) and TensorRT fp16 engines"
  "$ROOT/.venv/bin/sam2s" export --model-size tiny --image-size "$size" --random-weights \
    --out "$OUT_DIR/onnx/tiny_$size" --fp16 --tensorrt --force 2>&1 | tee "$OUT_DIR/export_$size.log" || STATUS=1
done

# ---- 3. tests -------------------------------------------------------------------------------
log "tests: -m gpu, then the export / onnxruntime / TensorRT test files"
set +e
"$PY" -m pytest test -m gpu -q -rs 2>&1 | tee "$OUT_DIR/pytest_gpu.log"
GPU_RC=${PIPESTATUS[0]}
"$PY" -m pytest test/test_onnx_export.py test/test_onnxruntime_backend.py test/test_tensorrt_backend.py -q -rs \
  2>&1 | tee "$OUT_DIR/pytest_backends.log"
BACKENDS_RC=${PIPESTATUS[0]}
set -e
[[ $GPU_RC == 0 && $BACKENDS_RC == 0 ]] || STATUS=1

# ---- 4. benchmark -------------------------------------------------------------------------------
# shellcheck disable=SC2086
for precision in fp32 fp16; do
  flag=""; [[ $precision == fp16 ]] && flag="--fp16"
  log "benchmark on cuda ($precision)"
  "$PY" benchmarks/bench_backends.py --device cuda --impls torch onnxruntime tensorrt official $flag \
    --sizes $SIZES --onnx-cache "$OUT_DIR/onnx" --quiet-wait 0 --out "$OUT_DIR/bench_cuda_$precision.json" \
    2>&1 | tee "$OUT_DIR/bench_cuda_$precision.log" || STATUS=1
done

# ---- 5. report ----------------------------------------------------------------------------------
{
  echo "# sam2s_ros GPU verification ($(date -Iseconds))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  cat "$OUT_DIR/versions.txt"
  echo '```'
  echo
  echo "## Tests"
  echo '```'
  tail -n 15 "$OUT_DIR/pytest_gpu.log"
  tail -n 15 "$OUT_DIR/pytest_backends.log"
  echo '```'
  for precision in fp32 fp16; do
    echo
    echo "## Benchmark on cuda, $precision (median s/frame)"
    grep -E '^\||^targets' "$OUT_DIR/bench_cuda_$precision.log" || echo "(failed: see bench_cuda_$precision.log)"
  done
  echo
  echo "Overall: $([[ $STATUS == 0 ]] && echo PASS || echo FAIL)"
} >"$OUT_DIR/report.md"
log "report: $OUT_DIR/report.md ($([[ $STATUS == 0 ]] && echo PASS || echo FAIL))"
exit "$STATUS"
