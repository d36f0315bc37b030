"""Shared fixtures: the real CIFAR-10 subset, a tiny preset, and a way to run the CLI."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data', 'cifar10-subset'))
sys.path.insert(0, ROOT)

# A ResNet-8 (one unit per stage): the real code paths at a fraction of ResNet-32's cost.
TINY_OVERRIDE = 'num_residual_units=1,batch_size=32'


@pytest.fixture(scope='session')
def subset():
    """The real CIFAR-10 subset; its absence skips locally but fails in CI."""
    if not os.path.exists(os.path.join(SUBSET, 'test_batch.bin')):
        message = f'the real CIFAR-10 subset is missing at {SUBSET}'
        if os.environ.get('CI') == 'true':
            pytest.fail(message + ' (CI must have ../shared beside the checkout)')
        pytest.skip(message)
    return SUBSET


def tiny_train_args(subset, log_root, *args):
    """The command line of a tiny training run on the real subset."""
    return (
        '--mode=train',
        '--data_dir',
        subset,
        '--log_root',
        str(log_root),
        f'--hparams_override={TINY_OVERRIDE}',
        *args,
    )


def run_main(*args, timeout=600):
    """Runs resnet_main.py as a user would; returns the completed process."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'resnet_main.py'), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
