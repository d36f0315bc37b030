"""scripts/benchmark.py as a user runs it: its JSON report, the machine it describes, oneDNN's
kernels by default (a user turning them off: test_startup.py), and a mistake in one line."""

import json
import os
import platform

import pytest
import tensorflow as tf
from conftest import TINY_OVERRIDE, assert_user_error, run_script

from resnet_cifar import machine


def run_benchmark(subset):
    """scripts/benchmark.py for two tiny steps; returns its JSON report and its output.

    The environment is the user's without TF_ENABLE_ONEDNN_OPTS, so the trainer's own default
    shows. ONEDNN_VERBOSE=1 makes oneDNN print each kernel it runs.
    """
    environment = {key: value for key, value in os.environ.items() if key != 'TF_ENABLE_ONEDNN_OPTS'}
    result = run_script(
        'scripts/benchmark.py',
        f'--hparams_override={TINY_OVERRIDE}',
        f'--data_dir={subset}',
        '--steps=2',
        '--warmup=1',
        '--loop_steps=3',
        '--json',
        env={**environment, 'ONEDNN_VERBOSE': '1'},
    )
    assert result.returncode == 0, result.stderr
    report = [line for line in result.stdout.splitlines() if line.startswith('{')]
    assert len(report) == 1, result.stdout[-2000:]
    return json.loads(report[0]), result.stdout


@pytest.mark.slow
def test_benchmark_emits_every_field_and_trains_on_onednn_by_default(subset):
    report, output = run_benchmark(subset)
    rates = ('train_images_per_sec', 'eval_images_per_sec', 'input_images_per_sec', 'device_input_images_per_sec')
    for rate in (*rates, 'loop_trainer_steps_per_sec', 'loop_bare_steps_per_sec', 'peak_memory_mb'):
        assert report[rate] > 0, rate
    # ResNet-8's 3x3 convolutions at 32x32 (16 filters), 16x16 (32) and 8x8 (64) and its dense layer
    convolutions = 32 * 32 * 16 * 9 * (3 + 16 + 16) + 16 * 16 * 32 * 9 * (16 + 32) + 8 * 8 * 64 * 9 * (32 + 64)
    assert report['multiply_adds_per_image'] == convolutions + 64 * 10
    assert report['train_data'] == 'binary' and report['input_data'] == 'binary'
    assert report['batch_size'] == 32 and report['steps'] == 2
    assert report['jit_compile'] is False
    if platform.machine().lower() in ('x86_64', 'amd64'):  # the default there: oneDNN's convolution kernels
        assert report['TF_ENABLE_ONEDNN_OPTS'] == '1'
        assert ',exec,cpu,convolution,' in output
    assert_describes_this_machine(report)


def assert_describes_this_machine(report):
    """The machine fields: the CPU model and instruction sets as machine.describe_cpu reads them from
    /proc/cpuinfo (tested in test_machine.py), oneDNN's ISA, the thread settings and the GPUs."""
    cpu = machine.describe_cpu(machine.read_cpuinfo())
    assert isinstance(report['cpu_model'], str) and report['cpu_model'].strip(), report['cpu_model']
    assert {key: report[key] for key in cpu} == cpu
    flags = {flag for flag in machine.CPU_FLAGS if cpu[flag]}
    assert report['cpus'] == os.cpu_count()
    for threads in ('intra_op_threads', 'inter_op_threads'):
        assert isinstance(report[threads], int) and report[threads] >= 0, threads  # 0: TensorFlow's choice
    gpus = tf.config.list_physical_devices('GPU')
    assert len(report['gpus']) == len(gpus) and all(isinstance(name, str) and name for name in report['gpus'])
    assert report['strategy'] == {0: 'default', 1: 'one_device'}.get(len(gpus), 'mirrored')
    assert report['replicas'] == max(1, len(gpus))
    if platform.machine().lower() in ('x86_64', 'amd64') and 'ONEDNN_MAX_CPU_ISA' not in os.environ:
        isa = report['onednn_isa']  # as oneDNN words it, e.g. 'Intel AVX-512 with Intel DL Boost and bfloat16 support'
        expected = (
            'AMX' if 'amx_tile' in flags else 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else ''
        )
        assert isinstance(isa, str) and expected in isa, isa
        if {'avx512_bf16', 'amx_bf16'} & flags:
            assert 'bfloat16' in isa, isa


def test_the_benchmark_reports_a_mistake_in_one_line():
    result = run_script('scripts/benchmark.py', '--hparams=resnet20x', '--steps=1', timeout=300)
    assert_user_error(result, "--hparams: unknown preset 'resnet20x'")
