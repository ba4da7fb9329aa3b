#!/usr/bin/env bash
# Install the MMAction2 stack and mmanon (editable) into the current Python environment: an activated virtual
# environment or conda environment, or else the interpreter that `python` runs.
#
#   bash tools/install.sh
#
# Steps: torch (kept when one is installed), mmcv 2.1.0 with compiled ops (kept when a compatible one is
# installed, else installed from a checked cached wheel, else built once from source with this environment's own
# interpreter and torch, checked, and cached), then mmengine 0.10.7 / mmdet 3.3.0 / mmaction2 1.2.0 and mmanon
# itself with its test extras. Safe to run again: nothing is rebuilt.
#
# Environment:
#   PYTHON               interpreter to install into (default: `python`, or `python3` where there is no `python`)
#   MMANON_WHEEL_CACHE   where built mmcv wheels are kept (default: ~/.cache/mmanon/wheels)
#   MMANON_EXTRAS        pip extras for mmanon (default: tests)
#   MMANON_MMCV_BUILD    "auto" (default) builds mmcv when no installed or cached one fits; "never" fails instead
set -euo pipefail
shopt -s inherit_errexit  # a failing command inside $(...) stops the script too

PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
WHEEL_CACHE=${MMANON_WHEEL_CACHE:-$HOME/.cache/mmanon/wheels}
EXTRAS=${MMANON_EXTRAS:-tests}
MMCV_BUILD=${MMANON_MMCV_BUILD:-auto}
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
REPO=$(cd "$(dirname "$0")/.." && pwd)

step() { echo "[install] $*"; }
fail() { echo "[install] $*" >&2; exit 1; }
trap 'echo "[install] FAILED at line $LINENO (exit status $?): see the output above" >&2' ERR
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@"; }
check_wheel() { "$PYTHON" "$REPO/tools/misc/check_mmcv_wheel.py" "$@" >&2; }

case $MMCV_BUILD in auto | never) ;; *) fail "MMANON_MMCV_BUILD must be auto or never, got '$MMCV_BUILD'" ;; esac
step "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

# An operating system's own Python (PEP 668) refuses pip installs outside a virtual environment: say so before
# anything is half-installed.
if "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(sys.prefix == sys.base_prefix and os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'
then :; else
  fail "$PYTHON belongs to the operating system, which forbids pip installs into it (PEP 668); install into a \
virtual environment instead: python3 -m venv venv && . venv/bin/activate && bash tools/install.sh"
fi

if "$PYTHON" -c 'import torch' 2>/dev/null; then
  step "torch: keeping installed $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  step "torch: installing torch==$TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION"
fi
TORCH_INSTALLED=$("$PYTHON" -c 'import torch; print(torch.__version__)')
PY_TAG=$("$PYTHON" "$REPO/tools/misc/check_mmcv_wheel.py" --interpreter-tag)

# torch 2.13 declares setuptools>=77; mmengine 0.10.7 and mmaction2 need pkg_resources, removed in setuptools 81.
step "setuptools>=77,<81"
pip_install -q "setuptools>=77,<81"

mmcv_ok() {
  "$PYTHON" - <<'PY' 2>/dev/null
import mmcv, mmcv.ops  # noqa: F401  (mmcv.ops loads the compiled mmcv._ext)
assert tuple(map(int, mmcv.__version__.split('.')[:2])) in ((2, 0), (2, 1))
PY
}

# Prints the first cached wheel for this interpreter that passes the check; deletes the ones that fail it.
cached_wheel() {
  local wheel
  for wheel in "$cache_dir/mmcv-$MMCV_VERSION-$PY_TAG-"*.whl "$cache_dir/mmcv-$MMCV_VERSION-py"*.whl; do
    if [ -e "$wheel" ] && check_wheel --delete "$wheel"; then
      echo "$wheel"
      return
    fi
  done
}

# Builds mmcv with the target interpreter itself, so that the build imports exactly the torch the wheel will run
# against (a separate build environment sees another torch, or none, and mmcv's setup.py then silently drops
# the ops). mmcv 2.1.0's setup.py needs pkg_resources from setuptools<70: that setuptools, wheel and ninja come
# from a throwaway overlay put first on PYTHONPATH, and the environment keeps its own. --no-cache-dir: pip's
# wheel cache could hand back an earlier build of the same sdist, with or without ops. The wheel is checked
# before it enters the cache; prints its path there.
build_wheel() {
  local tmp wheel
  tmp=$(mktemp -d)
  # build_wheel runs in a $(...) subshell, whose exit, on success or failure, removes the build folder.
  trap "rm -rf '$tmp'" EXIT
  pip_install -q --no-cache-dir --no-warn-conflicts --target "$tmp/overlay" "setuptools<70" wheel ninja >&2
  PYTHONPATH="$tmp/overlay${PYTHONPATH:+:$PYTHONPATH}" PATH="$tmp/overlay/bin:$PATH" MMCV_WITH_OPS=1 \
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PYTHON" -m pip wheel --disable-pip-version-check --no-build-isolation \
    --no-deps --no-cache-dir -w "$tmp/wheels" "mmcv==$MMCV_VERSION" >&2
  wheel=$(ls "$tmp"/wheels/mmcv-*.whl)
  check_wheel "$wheel" || fail "the mmcv build produced a wheel without compiled ops (above)"
  # Copied under a temporary name, then renamed: an interrupted copy never leaves a truncated wheel in the cache.
  mkdir -p "$cache_dir"
  cp "$wheel" "$cache_dir/.partial-$(basename "$wheel")"
  mv "$cache_dir/.partial-$(basename "$wheel")" "$cache_dir/$(basename "$wheel")"
  echo "$cache_dir/$(basename "$wheel")"
}

# Installed by path, so that pip's cache has no say. First over whatever mmcv is there (pip keeps an installed mmcv
# of the same version, ops or not, unless forced), then with its dependencies (numpy, opencv-python, mmengine,
# ...), which a fresh environment lacks, held to the versions requirements/mminstall.txt pins for the OpenMMLab
# stack below.
install_wheel() {
  pip_install --force-reinstall --no-deps "$1"
  pip_install "$1" -c "$REPO/requirements/mminstall.txt"
}
ops_error() { "$PYTHON" -c 'import mmcv.ops' 2>&1 | tail -n 1 || true; }

if mmcv_ok; then
  step "mmcv: keeping installed $("$PYTHON" -c 'import mmcv; print(mmcv.__version__)') (compiled ops present)"
else
  # The compiled ops are tied to the torch they were built against, so the cache is keyed by its version.
  cache_dir="$WHEEL_CACHE/torch-$TORCH_INSTALLED"
  wheel=$(cached_wheel)
  if [ -n "$wheel" ]; then
    step "mmcv: installing the cached wheel $wheel"
    install_wheel "$wheel"
    if ! mmcv_ok; then
      # It passed the file check, yet its ops do not load (say, built against another torch build of the same
      # version): it must not be served again.
      step "mmcv: the cached wheel's ops do not load here ($(ops_error)); deleted it"
      rm -f "$wheel"
      wheel=
    fi
  fi
  if [ -z "$wheel" ]; then
    [ "$MMCV_BUILD" = auto ] || fail "mmcv: no usable wheel in $cache_dir and MMANON_MMCV_BUILD=never: not building"
    step "mmcv: building $MMCV_VERSION with compiled ops from source with $PYTHON (about 10 minutes on 2 cores)"
    wheel=$(build_wheel)
    install_wheel "$wheel"
    mmcv_ok || { rm -f "$wheel"; fail "mmcv built and installed, but its ops do not load: $(ops_error)"; }
  fi
fi

step "OpenMMLab stack and mmanon[$EXTRAS] (editable)"
pip_install -e "$REPO[$EXTRAS]"

step "checking imports"
"$PYTHON" -c 'import mmanon, mmaction.models, mmcv.ops; print("[install] ok: mmanon", mmanon.__version__)'
