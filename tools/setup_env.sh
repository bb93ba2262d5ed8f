#!/usr/bin/env bash
# Create .venv and install geo into it, picking the right torch build.
#
# * No NVIDIA GPU  -> torch==2.13.0 CPU wheel (a local wheel where the machine
#   provides one, else the official CPU index). Never the multi-GB CUDA build.
# * NVIDIA GPU     -> torch==2.13.0 from the default index (CUDA build).
# torch is installed before the package itself, so `pip install -e .` finds
# the requirement already satisfied and never re-resolves it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0

# open3d links against libusb-1.0 at import time.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing libusb-1.0-0 (needed by open3d)"
    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libusb-1.0-0 >/dev/null; }) \
      || echo "[setup] could not install libusb; run: sudo apt-get install -y libusb-1.0-0"
  else
    echo "[setup] open3d needs libusb; run: sudo apt-get install -y libusb-1.0-0"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

have_torch=$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  case "$have_torch" in
    # A local find-links folder may hold a +cpu wheel that pip would prefer (its
    # local version sorts higher): look only at the index for the CUDA build.
    *cpu*|"") echo "[setup] GPU found: installing torch==$TORCH_VERSION (CUDA build)"
              PIP_FIND_LINKS="" "${PIP[@]}" install --force-reinstall "torch==$TORCH_VERSION" 2>&1 | grep -v '^WARNING: Location' || true ;;
  esac
  "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || echo "[setup] warning: a GPU is present but torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null) cannot use it"
else
  if [ -z "$have_torch" ]; then
    echo "[setup] no GPU: installing torch==$TORCH_VERSION CPU build"
    "${PIP[@]}" install "torch==$TORCH_VERSION+cpu" 2>&1 | grep -v '^WARNING: Location' \
      || "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$VENV/bin/python" -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }

echo "[setup] installing geo and its dependencies"
"${PIP[@]}" install -e ".[dev,edit]" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import geo, scenes, tools, open3d, gsplat, kornia, trimesh, tyro" \
  || { echo "[setup] installation incomplete" >&2; exit 1; }
echo "[setup] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
