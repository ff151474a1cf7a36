#!/usr/bin/env bash
# One-shot, idempotent setup: project venv with pinned packages, the package itself,
# and the default dataset. Safe to rerun; it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
FASHION_DIR=/usr/share/datasets/fashion-mnist
STAMP="$VENV/.installed"

if [ ! -f "$STAMP" ] || [ requirements.lock -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
    # torch first and pinned: anything that admits a newer torch would pull the registry's
    # CUDA build and several GB of CUDA packages. 2.13.0 is a CPU wheel on this kind of machine.
    "$VENV/bin/pip" install --quiet torch==2.13.0
    "$VENV/bin/pip" install --quiet -r requirements.lock
    "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e .
    touch "$STAMP"
else
    echo "setup: $VENV is up to date"
fi

# The default experiment's dataset. Debian ships it; elsewhere point data_dir at the files.
if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "setup: installing dataset-fashion-mnist"
        apt-get install -y -q dataset-fashion-mnist >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
    else
        echo "setup: Fashion-MNIST is not in $FASHION_DIR and apt-get is not usable here;" \
             "put the four IDX .gz files in a folder and set data_dir in config.yaml" >&2
    fi
fi
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
