#!/usr/bin/env bash
# Installs the project (pip install -e .), then trains and evaluates the default ResNet-32 on CIFAR-10
# into runs/quickstart, the folder README's next commands use.
#   bash scripts/quickstart.sh                  downloads CIFAR-10 into data/ first
#   bash scripts/quickstart.sh --data_dir=DIR   uses the CIFAR-10 batch files already in DIR
# Further flags go to resnet_main.py (e.g. --train_steps=300).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
if [[ " $* " != *" --data_dir="* ]]; then
  python scripts/download_cifar.py --dataset=cifar10 --data_dir=data
fi
exec python resnet_main.py --mode=train_and_eval --log_root=runs/quickstart --data_dir=data "$@"
