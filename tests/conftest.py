"""What several test files share: the real CIFAR-10 subset, a tiny network, runs made in-process
or as a user makes them, record files, and the check of a one-line user error."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

# isort: split
import resnet_model
from resnet_cifar import run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data', 'cifar10-subset'))

# A ResNet-8 (one unit per stage): the real code paths at a fraction of ResNet-32's cost.
TINY = {'num_residual_units': 1, 'batch_size': 32}
TINY_OVERRIDE = ','.join(f'{key}={value}' for key, value in TINY.items())
# Every switch of the newer recipes on, in a few steps.
ALL_SWITCHES = {
    'lr_schedule': 'cosine',
    'warmup_steps': 2,
    'label_smoothing': 0.1,
    'optimizer': 'nesterov',
    'ema_decay': 0.9,
    'cutout': 8,
    'flip_tta': True,
}


@pytest.fixture(scope='session')
def subset():
    """The real CIFAR-10 subset; its absence skips locally but fails in CI."""
    if not os.path.exists(os.path.join(SUBSET, 'test_batch.bin')):
        message = f'the real CIFAR-10 subset is missing at {SUBSET}'
        if os.environ.get('CI') == 'true':
            pytest.fail(message + ' (CI must have ../shared beside the checkout)')
        pytest.skip(message)
    return SUBSET


def tiny_hparams(**values):
    return resnet_model.make_hparams({**TINY, **values})


def tiny_config(log_root, subset, overrides=None, seed=0, **options):
    """The configuration of a tiny run on the real subset; `options` are RunConfig's fields."""
    data = run_config.data_settings('cifar10', subset, seed=seed)
    return run_config.new_run(str(log_root), overrides={**TINY, **(overrides or {})}, data=data, **options)


@pytest.fixture
def copy_run(tmp_path):
    """Copies a run's folder, for a test that changes it; returns the copy's configuration."""

    def copy(config):
        shutil.copytree(config.log_root, tmp_path / 'run')
        return dataclasses.replace(config, log_root=str(tmp_path / 'run'), train_dir=None, eval_dir=None)

    return copy


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


def assert_user_error(result, *fragments):
    """A user mistake on the command line: exit code 2, one 'error:' line naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def as_flags(error):
    """A UserError's line as the command line words it, each setting named by its flag."""
    return error.line(lambda key: f'--{key}')


def write_records(path, labels, images=None, coarse=None):
    """CIFAR binary records: [coarse label,] label, then the image depth-major (random pixels
    when `images` is None)."""
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    with open(path, 'wb') as f:
        for i, (label, image) in enumerate(zip(labels, images, strict=True)):
            if coarse is not None:
                f.write(bytes([coarse[i]]))
            f.write(bytes([label]) + np.transpose(image, [2, 0, 1]).tobytes())
