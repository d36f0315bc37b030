"""What users really do to a run: bad input, kills, divergence, damaged checkpoints, eval beside
training. Each case runs the CLI as a user would, on the real CIFAR-10 subset."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_main, tiny_train_args
from test_main import _assert_user_error


def _start_main(*args):
    """resnet_main.py in the background, its log going to a file the test can read as it grows."""
    log = open(os.path.join(args[args.index('--log_root') + 1] + '.log'), 'w+')
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'resnet_main.py'), *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    return process, log


def _wait_for_step(log, process, at_least, timeout=300):
    """The newest step the trainer has logged, once it is at least `at_least`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log.seek(0)
        steps = [int(s) for s in re.findall(r'step (\d+)/', log.read())]
        if steps and steps[-1] >= at_least:
            return steps[-1]
        assert process.poll() is None, 'the trainer ended early'
        time.sleep(0.05)
    raise AssertionError(f'no step {at_least} within {timeout} s')


def _checkpoint_steps(log_root):
    return sorted(int(f[len('ckpt-') : -len('.index')]) for f in os.listdir(log_root) if f.endswith('.index'))


def _weights(path):
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith(('model/', 'optimizer/'))
    }


def _write_records(path, labels, label_bytes=1):
    """Binary records with the given labels (the last label byte) and random pixels."""
    rng = np.random.default_rng(0)
    with open(path, 'wb') as f:
        for label in labels:
            f.write(bytes([0] * (label_bytes - 1) + [label]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes())


# -- Input and configuration ---------------------------------------------------


def test_data_dir_without_batch_files(tmp_path):
    result = run_main('--mode=train', '--data_dir', str(tmp_path), '--log_root', str(tmp_path / 'run'))
    _assert_user_error(result, '--data_dir', 'no file matches', 'data_batch_*.bin')


def test_empty_file(tmp_path):
    (tmp_path / 'data_batch_1.bin').write_bytes(b'')
    result = run_main('--mode=train', '--data_dir', str(tmp_path), '--log_root', str(tmp_path / 'run'))
    _assert_user_error(result, 'data_batch_1.bin', 'empty')


@pytest.mark.parametrize('dataset, written_as, label_bytes', [('cifar10', 'cifar100', 2), ('cifar100', 'cifar10', 1)])
def test_files_of_the_other_dataset_are_named(tmp_path, dataset, written_as, label_bytes):
    _write_records(tmp_path / 'batch.bin', [1, 2, 3], label_bytes)
    result = run_main(
        '--mode=train',
        f'--dataset={dataset}',
        '--train_data_path',
        str(tmp_path / 'batch.bin'),
        '--log_root',
        str(tmp_path / 'run'),
    )
    _assert_user_error(result, 'batch.bin', f'looks like {written_as}', f'--dataset={written_as}')


def test_label_out_of_range(tmp_path):
    _write_records(tmp_path / 'data_batch_1.bin', [3, 12, 4])
    result = run_main('--mode=train', '--data_dir', str(tmp_path), '--log_root', str(tmp_path / 'run'))
    _assert_user_error(result, 'data_batch_1.bin', 'record 1 has label 12', '0..9')


@pytest.mark.parametrize(
    'override, fragments',
    [
        ('lrn_rate=-0.1', ['lrn_rate', 'positive']),
        ('lrn_rate=0', ['lrn_rate', 'positive']),
        ('num_residual_units=0', ['num_residual_units', 'positive']),
        ('batch_size=0', ['batch_size', 'positive']),
        ('optimizer=adam', ['optimizer', "'mom' or 'sgd'"]),
        ('train_steps=ten', ['train_steps', 'an integer']),
    ],
)
def test_impossible_values_are_named(tmp_path, override, fragments):
    result = run_main(
        '--mode=train', '--data_source=synthetic', '--log_root', str(tmp_path), '--hparams_override', override
    )
    _assert_user_error(result, *fragments)
    assert not os.listdir(tmp_path), 'a refused run must leave nothing behind'


def test_unwritable_log_root(tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    result = run_main('--mode=train', '--data_source=synthetic', '--log_root', str(tmp_path / 'a_file' / 'run'))
    _assert_user_error(result, '--log_root', 'cannot write', 'a_file')


@pytest.fixture(scope='module')
def short_run(subset, tmp_path_factory):
    """A tiny run with checkpoints at steps 2 and 4; tests copy it before changing it."""
    log_root = tmp_path_factory.mktemp('short') / 'run'
    result = run_main(*tiny_train_args(subset, log_root, '--train_steps=4', '--checkpoint_every_steps=2'))
    assert result.returncode == 0, result.stderr
    assert _checkpoint_steps(log_root) == [2, 4]
    return log_root


def _copy(run, tmp_path):
    copy = tmp_path / 'run'
    shutil.copytree(run, copy)
    return copy


def test_train_steps_below_the_restored_step(short_run, tmp_path):
    run = _copy(short_run, tmp_path)
    result = run_main('--mode=train', '--log_root', str(run), '--train_steps=3')
    _assert_user_error(result, '--train_steps', '3 is below step 4')


def test_foreign_checkpoint_without_hparams_json_is_refused(short_run, subset, tmp_path):
    """Only the checkpoints are left: they still say which run they belong to."""
    run = _copy(short_run, tmp_path)
    os.remove(run / 'hparams.json')
    before = sorted(os.listdir(run))
    result = run_main('--mode=train', '--data_dir', subset, '--log_root', str(run), '--hparams=resnet110')
    _assert_user_error(result, 'ckpt-4', 'preset resnet32', 'num_residual_units=1', 'resnet110')
    result = run_main(
        '--mode=eval', '--eval_once', '--dataset=cifar100', '--data_source=synthetic', '--log_root', str(run)
    )
    _assert_user_error(result, 'ckpt-4', 'on cifar10', 'not preset resnet32 on cifar100')
    assert sorted(os.listdir(run)) == before


# -- Faults ----------------------------------------------------------------------


def test_corrupted_newest_checkpoint(short_run, tmp_path):
    run = _copy(short_run, tmp_path)
    data = run / 'ckpt-4.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    result = run_main('--mode=eval', '--eval_once', '--log_root', str(run))
    assert result.returncode == 0, result.stderr
    assert re.search(r'skipping .*ckpt-4 is unreadable', result.stderr), result.stderr
    assert 'eval at step 2:' in result.stderr

    result = run_main('--mode=train', '--log_root', str(run), '--train_steps=6')
    _assert_user_error(result, 'cannot resume', 'ckpt-4', 'ckpt-2 is usable', 'move the files of ckpt-4.* away')
    assert _checkpoint_steps(run) == [2, 4], 'nothing of the run may be overwritten'


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_resume_continues(subset, tmp_path, sig):
    log_root = tmp_path / 'run'
    args = tiny_train_args(
        subset, log_root, '--train_steps=10000', '--checkpoint_every_steps=1000', '--summary_every_steps=1'
    )
    process, log = _start_main(*args)
    _wait_for_step(log, process, 3)
    process.send_signal(sig)
    assert process.wait(timeout=120) == 128 + sig
    log.seek(0)
    stopped = int(re.search(rf'stopped by {sig.name} at step (\d+)', log.read()).group(1))
    assert stopped >= 3 and _checkpoint_steps(log_root) == [stopped]

    result = run_main('--mode=train', '--log_root', str(log_root), f'--train_steps={stopped + 2}')
    assert result.returncode == 0, result.stderr
    assert f'from step {stopped} to {stopped + 2}' in result.stderr


def test_repeated_kill_9_loses_at_most_the_checkpoint_interval(subset, tmp_path):
    """Kill -9 at random moments: each restart resumes from the last complete checkpoint."""
    log_root = tmp_path / 'run'
    every = 3
    args = tiny_train_args(
        subset, log_root, '--train_steps=10000', f'--checkpoint_every_steps={every}', '--summary_every_steps=1'
    )
    rng = random.Random(0)
    reached = 0
    for _ in range(4):
        process, log = _start_main(*args)
        _wait_for_step(log, process, reached + 1)
        time.sleep(rng.uniform(0, 1.5))
        process.kill()
        process.wait()
        log.seek(0)
        text = log.read()
        logged = int(re.findall(r'step (\d+)/', text)[-1])
        resumed = re.search(r'resumed from \S*ckpt-(\d+)', text)
        if reached:
            assert resumed and int(resumed.group(1)) == reached, text
        reached = _checkpoint_steps(log_root)[-1]
        assert 0 <= logged - reached <= every, (logged, reached)
    result = run_main('--mode=eval', '--eval_once', '--log_root', str(log_root))
    assert result.returncode == 0, result.stderr
    assert f'eval at step {reached}:' in result.stderr


def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(short_run, tmp_path):
    run = _copy(short_run, tmp_path)
    result = run_main(
        '--mode=train',
        '--log_root',
        str(run),
        '--train_steps=50',
        '--hparams_override=lrn_rate=1e30,min_lrn_rate=1e30',
        '--summary_every_steps=10',
        '--checkpoint_every_steps=1',
    )
    _assert_user_error(result, 'training diverged at step', 'the last good one is')
    diverged = int(re.search(r'diverged at step (\d+)', result.stderr).group(1))
    steps = _checkpoint_steps(run)
    assert steps[-1] == diverged - 1 and f'ckpt-{steps[-1]};' in result.stderr
    for step in steps:
        assert all(np.isfinite(w).all() for w in _weights(str(run / f'ckpt-{step}')).values())


def test_eval_beside_training_sees_each_checkpoint_once_and_ends_with_it(subset, tmp_path):
    log_root = tmp_path / 'run'
    trainer, trainer_log = _start_main(
        *tiny_train_args(subset, log_root, '--train_steps=12', '--checkpoint_every_steps=2', '--summary_every_steps=1')
    )
    _wait_for_step(trainer_log, trainer, 1)
    evaluator = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'resnet_main.py'), '--mode=eval', '--log_root', str(log_root)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert trainer.wait(timeout=300) == 0
    assert evaluator.returncode == 0, evaluator.stderr
    steps = [int(s) for s in re.findall(r'eval at step (\d+):', evaluator.stderr)]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 12, steps
    assert 'skipping' not in evaluator.stderr


# -- Exactness -------------------------------------------------------------------


def test_resume_is_exact(subset, tmp_path):
    """8 steps in one go, or 4, a stop, and 4 more: the same weights, bit for bit."""
    one_go, resumed = tmp_path / 'one_go', tmp_path / 'resumed'
    assert run_main(*tiny_train_args(subset, one_go, '--train_steps=8', '--seed=3')).returncode == 0
    assert run_main(*tiny_train_args(subset, resumed, '--train_steps=4', '--seed=3')).returncode == 0
    assert run_main('--mode=train', '--log_root', str(resumed), '--train_steps=8').returncode == 0
    expected, actual = _weights(str(one_go / 'ckpt-8')), _weights(str(resumed / 'ckpt-8'))
    assert expected.keys() == actual.keys() and len(expected) > 40
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
