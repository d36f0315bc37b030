import json
import os
import subprocess
import sys

from conftest import ROOT, TINY_OVERRIDE


def test_benchmark_emits_every_field(subset):
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
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for rate in ('train_images_per_sec', 'eval_images_per_sec', 'input_images_per_sec', 'peak_memory_mb'):
        assert report[rate] > 0, rate
    assert report['train_data'] == 'binary' and report['input_data'] == 'binary'
    assert report['batch_size'] == 32 and report['steps'] == 2
