#!/usr/bin/env bash
# Install the MMAction2 stack and mmanon (editable) into the current Python environment.
#
#   bash tools/install.sh
#
# Steps: torch (kept when one is installed), mmcv 2.1.0 with compiled ops (kept when a compatible one is
# installed, else built once from source and cached), mmengine 0.10.7 / mmdet 3.3.0 / mmaction2 1.2.0,
# then mmanon itself with its test extras. Safe to run again: nothing is rebuilt.
#
# Environment:
#   PYTHON               interpreter to install into (default: python3)
#   MMANON_WHEEL_CACHE   where the built mmcv wheel is kept (default: ~/.cache/mmanon/wheels)
#   MMANON_EXTRAS        pip extras for mmanon (default: tests; e.g. "tests,attack")
set -euo pipefail

PYTHON=${PYTHON:-python3}
WHEEL_CACHE=${MMANON_WHEEL_CACHE:-$HOME/.cache/mmanon/wheels}
EXTRAS=${MMANON_EXTRAS:-tests}
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
REPO=$(cd "$(dirname "$0")/.." && pwd)

step() { echo "[install] $*"; }
trap 'echo "[install] FAILED at line $LINENO (exit status $?): see the output above" >&2' ERR
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check "$@"; }

step "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

if "$PYTHON" -c 'import torch' 2>/dev/null; then
  step "torch: keeping installed $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  step "torch: installing torch==$TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION"
fi
TORCH_INSTALLED=$("$PYTHON" -c 'import torch; print(torch.__version__)')

# torch 2.13 declares setuptools>=77; mmengine 0.10.7 and mmaction2 need pkg_resources, removed in setuptools 81.
step "build tools: setuptools<81, wheel, ninja"
pip_install -q "setuptools>=77,<81" wheel ninja

mmcv_ok() {
  "$PYTHON" - <<'PY' 2>/dev/null
from packaging.version import Version
import mmcv, mmcv.ops  # noqa: F401  (mmcv.ops loads the compiled mmcv._ext)
assert Version('2.0.0') <= Version(mmcv.__version__) < Version('2.2.0')
PY
}

if mmcv_ok; then
  step "mmcv: keeping installed $("$PYTHON" -c 'import mmcv; print(mmcv.__version__)') (compiled ops present)"
else
  # The wheel's compiled ops are tied to the torch they were built against, so the cache is keyed by it.
  cache_dir="$WHEEL_CACHE/torch-$TORCH_INSTALLED"
  wheel=$(ls "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    step "mmcv: building $MMCV_VERSION with compiled ops from source (about 9 minutes on 2 cores)"
    # mmcv's setup.py imports pkg_resources and needs setuptools<70; build in a throwaway venv that sees
    # the installed torch, so the main environment keeps its own setuptools. Without --no-build-isolation
    # pip would build against a fresh torch-less environment and silently drop the ops.
    build_venv=$(mktemp -d)/venv
    "$PYTHON" -m venv --system-site-packages "$build_venv"
    "$build_venv/bin/python" -m pip install -q --disable-pip-version-check "setuptools<70" wheel
    mkdir -p "$cache_dir"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$build_venv/bin/python" -m pip wheel \
      --disable-pip-version-check --no-build-isolation --no-deps -w "$cache_dir" "mmcv==$MMCV_VERSION"
    rm -rf "$(dirname "$build_venv")"
    wheel=$(ls "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
  else
    step "mmcv: reusing cached wheel $wheel"
  fi
  # With its dependencies (numpy, opencv-python, mmengine, ...), which a fresh environment lacks, held to the
  # versions requirements/mminstall.txt pins for the OpenMMLab stack below.
  pip_install "$wheel" -c "$REPO/requirements/mminstall.txt"
  mmcv_ok || { echo "[install] mmcv installed but mmcv.ops does not import" >&2; exit 1; }
fi

step "OpenMMLab stack and mmanon[$EXTRAS] (editable)"
pip_install -e "$REPO[$EXTRAS]"

step "checking imports"
"$PYTHON" -c 'import mmanon, mmaction.models, mmcv.ops; print("[install] ok: mmanon", mmanon.__version__)'
