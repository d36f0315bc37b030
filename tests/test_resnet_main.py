"""resnet_main.py as a user runs it, for what only a process shows: flags over the saved run,
one-line errors and exit codes, signals, and kill -9."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import (
    ROOT,
    TINY_OVERRIDE,
    assert_user_error,
    checkpoint_steps,
    run_main,
    run_script,
    tiny_config,
    tiny_train_args,
    write_records,
)

import resnet_main
from resnet_cifar import errors, evaluation, training
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def cli_run(subset, tmp_path_factory):
    """README's flow: train 6 steps, then the same run to 10 with only --log_root and --train_steps."""
    log_root = str(tmp_path_factory.mktemp('run'))
    common = ['--data_dir', subset, '--log_root', log_root, '--summary_every_steps=2', '--checkpoint_every_steps=4']
    first = run_main('--mode=train', f'--hparams_override={TINY_OVERRIDE}', '--train_steps=6', *common)
    assert first.returncode == 0, first.stderr
    second = run_main('--mode=train', '--train_steps=10', '--log_root', log_root, '--summary_every_steps=2')
    assert second.returncode == 0, second.stderr
    return {'log_root': log_root, 'first': first, 'second': second}


def test_second_run_resumes_without_repeating_flags(cli_run):
    assert 'total_params: ' in cli_run['first'].stdout
    second = cli_run['second'].stderr
    assert 'resumed from' in second and 'ckpt-6' in second
    assert 'from step 6 to 10' in second
    log_root = cli_run['log_root']
    assert second.splitlines()[-2].startswith(f'summary: {log_root} at step 10 of 10 after 0:')
    assert second.splitlines()[-2].endswith(f'(this command); checkpoint {log_root}/ckpt-10')
    assert second.splitlines()[-1] == 'summary: no test eval of this run yet'
    saved = json.load(open(os.path.join(cli_run['log_root'], 'hparams.json')))
    assert saved['hparams']['train_steps'] == 10 and saved['hparams']['batch_size'] == 32
    assert saved['data']['train_data_path'].endswith('cifar10-subset/data_batch_*.bin')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc/cpuinfo')
def test_a_run_logs_its_devices_and_strategy_in_one_line(cli_run):
    """With no device flag, on this machine: one line, the start-up line of this machine (whose
    wording test_machine.py's test_the_start_up_line checks) with settings named as flags."""
    stderr = cli_run['first'].stderr
    lines = [line[line.index('devices: ') :] for line in stderr.splitlines() if 'devices: ' in line]
    assert len(lines) == 1, stderr
    if tf.config.list_physical_devices('GPU'):
        assert re.match(r'devices: \d+ GPUs? \(.+\); strategy: (one_device|mirrored), \d+ replicas?$', lines[0])
        return
    cpuinfo = open('/proc/cpuinfo').read()
    model = re.search(r'^model name\s*:\s*(.+)$', cpuinfo, flags=re.M).group(1).strip()
    start = f'devices: CPU ({model}, {os.cpu_count()} logical cores; no GPU visible); strategy: default, 1 replica'
    assert lines[0].startswith(start), lines[0]
    # nothing measured in the tests' own cache: where the CPU has bfloat16, the hint says how to measure
    hint = lines[0][len(start) :]
    if ' avx512_bf16' in cpuinfo:
        assert hint.startswith('; ') and 'not measured here' in hint and '--dtype=auto' in hint, hint
    else:
        assert hint == '', hint


def test_resume_with_another_architecture_is_refused(cli_run, parsed_flags):
    before = sorted(os.listdir(cli_run['log_root']))
    parsed_flags('--log_root', cli_run['log_root'], '--hparams=resnet110')
    with pytest.raises(UserError) as error:
        resnet_main.build_config('float32')
    line = error.value.line(resnet_main.flag_name)
    for fragment in ('holds a run of preset resnet32', 'num_residual_units=1', 'resnet110', '--log_root'):
        assert fragment in line
    assert sorted(os.listdir(cli_run['log_root'])) == before


def _user_mistakes(tmp_path):
    """Where the mistakes below point: an empty folder, a file of CIFAR-100 records."""
    (tmp_path / 'empty').mkdir()
    write_records(tmp_path / 'batch.bin', [1, 2, 3], coarse=[0, 0, 0])
    return {'empty': tmp_path / 'empty', 'cifar100_file': tmp_path / 'batch.bin'}


def test_a_user_error_after_tensorflow_starts_ends_the_process_in_one_line(tmp_path):
    """Exit code 2 and one line, no traceback, once TensorFlow has started and logged."""
    result = run_main(
        '--mode=train', '--log_root', str(tmp_path / 'run'), f'--data_dir={_user_mistakes(tmp_path)["empty"]}'
    )
    assert_user_error(result, '--data_dir: no file matches', 'data_batch_*.bin')


@pytest.mark.parametrize(
    'args, fragments',
    [
        pytest.param(
            ['--train_data_path={cifar100_file}'],
            ['batch.bin', 'looks like cifar100', '--dataset=cifar100'],
            id='a data file',
        ),
        pytest.param(
            ['--hparams_override=dropout=0.5'], ["--hparams_override: unknown hparam 'dropout'"], id='hparams'
        ),
        pytest.param(
            ['--mode=eval', '--data_source=synthetic', '--eval_timeout_secs=1'],
            ['--log_root: no usable checkpoint appeared', '(--eval_timeout_secs)'],
            id='the run folder',
        ),
    ],
)
def test_a_user_error_is_one_line_naming_the_flag(tmp_path, parsed_flags, capsys, args, fragments):
    """resnet_main's main in this process, as the command line wraps it (the process: the test above)."""
    paths = _user_mistakes(tmp_path)
    args = [arg.format(**paths) for arg in args]
    parsed_flags('--mode=train', '--log_root', str(tmp_path / 'run'), *args)
    with pytest.raises(SystemExit) as ended:
        errors.exit_on_error(resnet_main.main, resnet_main.FLAGS, resnet_main.flag_name)(['resnet_main.py'])
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert ended.value.code == 2
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize(
    'args, line',
    [
        (['--hparams_override=train_steps=ten'], "--hparams_override: train_steps: expected an integer, got 'ten'"),
        (['--hparams=resnet33'], "--hparams: unknown preset 'resnet33'"),
        (
            ['--dataset=cifar100', '--data_dir={cifar10}'],
            '--data_dir: {cifar10} has no cifar100 files (train.bin, test.bin); it looks like cifar10 '
            '(data_batch_*.bin, test_batch.bin): pass --dataset=cifar10',
        ),
    ],
    ids=['an override', 'a preset', 'a folder of the other dataset'],
)
def test_a_mistake_told_before_tensorflow_starts_is_all_the_output(tmp_path, args, line):
    """Nothing else is printed (TensorFlow would print the devices line first), and nothing is written."""
    (tmp_path / 'cifar10').mkdir()
    write_records(tmp_path / 'cifar10' / 'data_batch_1.bin', [1, 2, 3])
    args = [arg.format(cifar10=tmp_path / 'cifar10') for arg in args]
    result = run_main('--mode=train', '--log_root', str(tmp_path / 'run'), *args)
    assert_user_error(result, line.format(cifar10=tmp_path / 'cifar10'), alone=True)
    assert not (tmp_path / 'run').exists()


def _start_main(*args, name='train'):
    """resnet_main.py in the background, its log going to a file the test can read as it grows."""
    log = open(os.path.join(f'{args[args.index("--log_root") + 1]}.{name}.log'), 'w+')
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


def _wait_for_line(log, process, text, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log.seek(0)
        if text in log.read():
            return
        assert process.poll() is None, 'the process ended early'
        time.sleep(0.05)
    raise AssertionError(f'no {text!r} within {timeout} s')


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_saves_the_current_step_and_resume_continues(subset, tmp_path):
    sig = signal.SIGTERM
    log_root = tmp_path / 'run'
    args = tiny_train_args(
        subset, log_root, '--train_steps=10000', '--checkpoint_every_steps=1000', '--summary_every_steps=1'
    )
    process, log = _start_main(*args)
    _wait_for_step(log, process, 3)
    process.send_signal(signal.SIGSTOP)  # paused, still holding its folder: it takes no CPU from the second start
    try:
        second = run_main(*args)  # the same command started twice
    finally:
        process.send_signal(signal.SIGCONT)
    assert_user_error(second, f'--log_root: {log_root} is in use by train process {process.pid}', 'another --log_root')
    process.send_signal(sig)
    assert process.wait(timeout=120) == 128 + sig
    log.seek(0)
    stopped = int(re.search(rf'stopped by {sig.name} at step (\d+)', log.read()).group(1))
    assert stopped >= 3 and checkpoint_steps(log_root) == [stopped]

    watcher, watcher_log = _start_main('--mode=eval', '--log_root', str(log_root), name='eval')
    _wait_for_line(watcher_log, watcher, f'eval at step {stopped}:')
    watcher.send_signal(signal.SIGINT)  # Ctrl-C on the eval watcher, waiting for the next checkpoint
    assert watcher.wait(timeout=60) == 128 + signal.SIGINT
    watcher_log.seek(0)
    output = watcher_log.read()
    assert 'stopped by SIGINT' in output and 'Traceback' not in output, output
    assert 'metrics.json' in os.listdir(log_root / 'eval')
    assert not [name for name in os.listdir(log_root / 'eval') if '.tmp' in name], 'no partial metrics.json'

    assert training.train(tiny_config(log_root, subset, {'train_steps': stopped + 2})).step == stopped + 2


@pytest.mark.slow
@pytest.mark.multiprocess
def test_repeated_kill_9_loses_at_most_the_checkpoint_interval(subset, tmp_path):
    """Kill -9 at random moments: each restart resumes from the last complete checkpoint."""
    log_root = tmp_path / 'run'
    every = 3
    args = tiny_train_args(
        subset, log_root, '--train_steps=10000', f'--checkpoint_every_steps={every}', '--summary_every_steps=1'
    )
    rng = random.Random(0)
    reached = 0
    for _ in range(3):
        process, log = _start_main(*args)
        _wait_for_step(log, process, reached + every + 1)  # past a new checkpoint, however loaded the machine
        time.sleep(rng.uniform(0, 0.6))
        process.kill()
        process.wait()
        log.seek(0)
        text = log.read()
        logged = int(re.findall(r'step (\d+)/', text)[-1])
        resumed = re.search(r'resumed from \S*ckpt-(\d+)', text)
        if reached:
            assert resumed and int(resumed.group(1)) == reached, text
        reached = checkpoint_steps(log_root)[-1]
        assert 0 <= logged - reached <= every, (logged, reached)
    config = tiny_config(log_root, subset, {'train_steps': 10000}, eval_once=True)
    # Eval scores the newest checkpoint the index names: the kill may fall after a save's files and
    # before its naming, and only a resume names that one (test_run_folder checks the repair).
    assert evaluation.evaluate_checkpoints(config)['step'] in (reached, reached - every)


def test_help_is_quiet_and_no_failure():
    """As a user's shell runs it: TF_CPP_MIN_LOG_LEVEL unset, so TensorFlow's start-up lines are silenced."""
    environment = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
    result = run_script('resnet_main.py', '--help', timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert re.search(r'--log_root: Required\.', result.stdout), result.stdout
    assert 'developer' not in result.stdout.lower(), 'the usage is for users'
    assert 'cuInit' not in result.stderr and 'oneDNN' not in result.stderr, result.stderr
