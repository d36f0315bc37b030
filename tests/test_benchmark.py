import json
import os
import platform
import subprocess
import sys

from conftest import ROOT, TINY_OVERRIDE


def run_benchmark(subset, **env):
    """scripts/benchmark.py for two tiny steps; returns its JSON report and its output.

    The environment is the user's without TF_ENABLE_ONEDNN_OPTS, so the trainer's own default
    shows, plus `env`. ONEDNN_VERBOSE=1 makes oneDNN print each kernel it runs.
    """
    environment = {key: value for key, value in os.environ.items() if key != 'TF_ENABLE_ONEDNN_OPTS'}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'scripts', 'benchmark.py'),
            f'--hparams_override={TINY_OVERRIDE}',
            f'--data_dir={subset}',
            '--steps=2',
            '--warmup=1',
            '--json',
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**environment, 'ONEDNN_VERBOSE': '1', **env},
    )
    assert result.returncode == 0, result.stderr
    report = [line for line in result.stdout.splitlines() if line.startswith('{')]
    assert len(report) == 1, result.stdout[-2000:]
    return json.loads(report[0]), result.stdout


def test_benchmark_emits_every_field_and_trains_on_onednn_by_default(subset):
    report, output = run_benchmark(subset)
    for rate in ('train_images_per_sec', 'eval_images_per_sec', 'input_images_per_sec', 'peak_memory_mb'):
        assert report[rate] > 0, rate
    assert report['train_data'] == 'binary' and report['input_data'] == 'binary'
    assert report['batch_size'] == 32 and report['steps'] == 2
    assert report['jit_compile'] is False
    if platform.machine().lower() in ('x86_64', 'amd64'):  # the default there: oneDNN's convolution kernels
        assert report['TF_ENABLE_ONEDNN_OPTS'] == '1'
        assert ',exec,cpu,convolution,' in output


def test_the_user_can_turn_onednn_off(subset):
    report, output = run_benchmark(subset, TF_ENABLE_ONEDNN_OPTS='0')
    assert report['TF_ENABLE_ONEDNN_OPTS'] == '0'
    assert ',exec,cpu,convolution,' not in output
