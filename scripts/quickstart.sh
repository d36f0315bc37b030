#!/usr/bin/env bash
# Trains and evaluates the default ResNet-32 on CIFAR-10 into runs/quickstart, the folder README's
# next commands use; the same command again resumes it.
#   bash scripts/quickstart.sh                  downloads CIFAR-10 into data/ first
#   bash scripts/quickstart.sh --data_dir=DIR   uses the CIFAR-10 batch files already in DIR
# Further flags go to resnet_main.py (e.g. --train_steps=300).
# It runs in the active virtual environment, else in the checkout's .venv (made if missing), and
# installs the project there (pip install -r requirements.txt -e .) only when it is not yet
# installed from this checkout: not on every run, nor on a resume.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  python="$VIRTUAL_ENV/bin/python"
  echo "quickstart: using the active virtual environment $VIRTUAL_ENV"
else
  python=.venv/bin/python
  if [[ ! -x "$python" ]]; then
    echo "quickstart: no virtual environment is active: making one in .venv (activate yours first to use it)"
    "$(command -v python3.11 || command -v python3)" -m venv .venv
  fi
  echo "quickstart: using the virtual environment .venv"
fi
# -P: the checkout itself is not on the path, so only an installed project is found.
installed='import os, sys, importlib.util as u, resnet_cifar
here = os.path.dirname(os.path.dirname(os.path.abspath(resnet_cifar.__file__)))
sys.exit(here != os.getcwd() or u.find_spec("tensorflow") is None)'
if ! "$python" -P -c "$installed" 2>/dev/null; then
  echo "quickstart: installing the project and its pinned requirements (once)"
  "$python" -m pip install -q -r requirements.txt -e .
fi
if [[ " $* " != *" --data_dir="* ]]; then
  "$python" scripts/download_cifar.py --dataset=cifar10 --data_dir=data
fi
exec "$python" resnet_main.py --mode=train_and_eval --log_root=runs/quickstart --data_dir=data "$@"
