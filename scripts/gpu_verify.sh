#!/usr/bin/env bash
# GPU verification (issue #14) from a fresh clone, in <= 8 minutes on one data-centre GPU:
#
#   1. set-up (own timeouts): scripts/setup.sh (.venv), then the GPU builds into .venv.
#      Desktop / data-centre x86_64: CUDA torch (the pinned version, TORCH_CUDA_INDEX),
#      onnxruntime-gpu instead of onnxruntime, TensorRT 10 (tensorrt-cu12).
#      Jetson (JetPack, detected by /etc/nv_tegra_release or a Tegra device tree): the PyPI
#      CUDA wheels are wrong there; the venv sees the system site-packages and the script
#      REQUIRES JetPack's builds: torch with CUDA (NVIDIA's Jetson wheel), onnxruntime-gpu for
#      JetPack (JETSON_ORT_WHEEL or the index JETSON_PIP_INDEX) and the system TensorRT
#      (python3-libnvinfer, `import tensorrt`); it installs nothing from the desktop indexes.
#   2. scripts/gpu_verify.py: exports, engine builds, parity against torch, masks over the
#      CholecSeg8k clip, FPS at 512² / 1024² with 1 and 3 instruments for torch fp32 / bf16,
#      onnxruntime CUDA, onnxruntime TensorRT fp16, native TensorRT fp16, engine build time,
#      peak GPU memory; one table (check, result, figure) on stdout and in $OUT_DIR/table.md.
#   3. the gpu-marked tests (pytest -m gpu) when time is left (one more table row).
# Exit status: 0 when every row passed, 1 on any FAIL (or a step out of time), 2 on bad usage.
#
# Usage: scripts/gpu_verify.sh [--skip-setup]
# Environment (defaults in brackets):
#   OUT_DIR           output folder [gpu_verify]
#   SIZES             image sizes ["512 1024"]
#   BUDGET_S          whole run, set-up included [470]
#   SAM2S_DATA        CholecSeg8k clip folder [../shared/data/cholecseg8k_clip]
#   TORCH_CUDA_INDEX  pip index of CUDA torch wheels [https://download.pytorch.org/whl/cu128]
#   ORT_GPU_SPEC      onnxruntime-gpu requirement [onnxruntime-gpu==<onnxruntime pin>]
#   TENSORRT_SPEC     TensorRT requirement [tensorrt-cu12>=10,<11]
#   JETSON_ORT_WHEEL / JETSON_PIP_INDEX   onnxruntime-gpu for JetPack (Jetson only)
set -uo pipefail

T_START=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT_DIR="${OUT_DIR:-gpu_verify}"
SIZES="${SIZES:-512 1024}"
BUDGET_S="${BUDGET_S:-470}"
SAM2S_DATA="${SAM2S_DATA:-$ROOT/../shared/data/cholecseg8k_clip}"
TORCH_CUDA_INDEX="${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}"
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements/runtime.txt; }
ORT_GPU_SPEC="${ORT_GPU_SPEC:-onnxruntime-gpu==$(pin onnxruntime)}"
TENSORRT_SPEC="${TENSORRT_SPEC:-tensorrt-cu12>=10,<11}"
SKIP_SETUP=0
for arg in "$@"; do
  case "$arg" in
    --skip-setup) SKIP_SETUP=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (usage: scripts/gpu_verify.sh [--skip-setup])" >&2; exit 2 ;;
  esac
done

log() { printf '[gpu_verify] %s\n' "$*"; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); log "$1: $2 $3"; }
left() { echo $((BUDGET_S - ($(date +%s) - T_START))); }
finish() {
  echo
  echo "| check | result | figure |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  [[ -f "$OUT_DIR/table.md" ]] && tail -n +3 "$OUT_DIR/table.md"
  if printf '%s\n' "${ROWS[@]}" | grep -q '| FAIL |' || [[ "${1:-0}" != 0 ]]; then
    echo "overall: FAIL"; exit 1
  fi
  echo "overall: PASS"; exit 0
}
step() { # step NAME TIMEOUT_S CMD...: one row, PASS/FAIL with its seconds
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$OUT_DIR/setup.log" 2>&1
  rc=$?
  if [[ $rc == 0 ]]; then row "$name" PASS "$(($(date +%s) - t0)) s"; else row "$name" FAIL "rc $rc after $(($(date +%s) - t0)) s (see $OUT_DIR/setup.log)"; fi
  return $rc
}

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
: >"$OUT_DIR/setup.log"
if ! command -v nvidia-smi >/dev/null 2>&1 && [[ ! -f /etc/nv_tegra_release ]]; then
  row "NVIDIA GPU" FAIL "nvidia-smi not found (this script needs an NVIDIA GPU and driver)"; finish 1
fi
JETSON=0
if [[ -f /etc/nv_tegra_release ]] || grep -qi tegra /proc/device-tree/compatible 2>/dev/null; then JETSON=1; fi
row "platform" INFO "$(uname -m), $([[ $JETSON == 1 ]] && echo "Jetson $(head -c 60 /etc/nv_tegra_release 2>/dev/null | tr -d '#\n')" || nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"

# ---- 1. set-up ------------------------------------------------------------------------------------
if [[ "$SKIP_SETUP" == 0 ]]; then
  if [[ $JETSON == 1 ]]; then
    # JetPack: torch, onnxruntime-gpu and TensorRT come from NVIDIA's Jetson builds; the venv
    # must see the system's TensorRT (python3-libnvinfer) and JetPack torch
    step "set-up (Jetson, system site-packages)" 300 env PYTHON="${PYTHON:-/usr/bin/python3}" \
      VENV_FLAGS=--system-site-packages bash scripts/setup.sh || finish 1
    # the pinned PyPI torch / onnxruntime would hide JetPack's CUDA builds in the system site-packages
    "$PY" -m pip uninstall -y torch onnxruntime >>"$OUT_DIR/setup.log" 2>&1
    if [[ -n "${JETSON_ORT_WHEEL:-}" ]]; then
      step "onnxruntime-gpu for JetPack" 120 "$PY" -m pip install --force-reinstall --no-deps "$JETSON_ORT_WHEEL"
    elif [[ -n "${JETSON_PIP_INDEX:-}" ]]; then
      step "onnxruntime-gpu for JetPack" 120 "$PY" -m pip install --index-url "$JETSON_PIP_INDEX" onnxruntime-gpu
    fi
    "$PY" -c "import tensorrt" 2>/dev/null || { row "system TensorRT (Jetson)" FAIL "import tensorrt fails: install JetPack's python3-libnvinfer, not tensorrt-cu12 from PyPI"; finish 1; }
  else
    step "set-up (scripts/setup.sh)" $(($(left) - 200)) bash scripts/setup.sh || finish 1
    step "CUDA torch $(pin torch)" 150 "$PY" -m pip install --force-reinstall --no-deps "torch==$(pin torch)" \
      --index-url "$TORCH_CUDA_INDEX" || finish 1
    step "CUDA runtime wheels" 120 "$PY" -m pip install "torch==$(pin torch)" --index-url "$TORCH_CUDA_INDEX" || finish 1
    "$PY" -m pip uninstall -y onnxruntime >>"$OUT_DIR/setup.log" 2>&1
    step "$ORT_GPU_SPEC, $TENSORRT_SPEC" 150 "$PY" -m pip install "$ORT_GPU_SPEC" "$TENSORRT_SPEC" || finish 1
  fi
fi
VERSIONS=$("$PY" - <<'EOF' 2>&1
import onnxruntime, torch
try:
    import tensorrt
    trt = tensorrt.__version__
except ImportError as exc:
    trt = f"missing ({exc})"
ok = torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
print(("OK " if ok else "BAD ") + f"torch {torch.__version__} cuda {torch.version.cuda} gpu "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else '-'}; onnxruntime {onnxruntime.__version__} "
      f"{','.join(p[:-17] for p in onnxruntime.get_available_providers())}; tensorrt {trt}")
EOF
)
if [[ "$VERSIONS" == OK* ]]; then row "GPU stack" PASS "${VERSIONS#OK }"; else row "GPU stack" FAIL "${VERSIONS#BAD }"; finish 1; fi

# ---- 2. the checks ---------------------------------------------------------------------------------
BUDGET=$(($(left) - 45))
# shellcheck disable=SC2086
timeout --kill-after=15 "$((BUDGET + 20))" "$PY" scripts/gpu_verify.py --sizes $SIZES --budget-s "$BUDGET" \
  --out "$OUT_DIR" --data "$SAM2S_DATA" 2>&1 | tee "$OUT_DIR/checks.log" | grep '^\[gpu_verify\]'
CHECKS_RC=${PIPESTATUS[0]}
[[ $CHECKS_RC == 0 ]] || row "scripts/gpu_verify.py" FAIL "rc $CHECKS_RC (see $OUT_DIR/checks.log)"

# ---- 3. gpu tests, if time is left -------------------------------------------------------------------
if (($(left) > 40)); then
  t0=$(date +%s)
  timeout --kill-after=5 "$(($(left) - 10))" "$PY" -m pytest test -m gpu -q -rs -p no:cacheprovider \
    >"$OUT_DIR/pytest_gpu.log" 2>&1
  rc=$?
  summary=$(tail -n 1 "$OUT_DIR/pytest_gpu.log")
  if [[ $rc == 0 || $rc == 5 ]]; then row "pytest -m gpu" PASS "$summary"; else row "pytest -m gpu" FAIL "rc $rc: $summary"; fi
else
  row "pytest -m gpu" INFO "skipped: no time left in the ${BUDGET_S} s budget"
fi
finish 0
