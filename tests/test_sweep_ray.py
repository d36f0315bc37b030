"""The sweep on Ray, nothing reported off the machine: the values of test_sweep.py's local grid, one seed each, on a
local cluster the sweep starts, stopped by Ctrl-C, then run again on a cluster of 2 CPUs it joins at
an address, resuming, to a table of the same shape."""

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_OVERRIDE, skip_here_fail_in_ci
from test_sweep import HEADER, assert_stopped_with_a_checkpoint, ctrl_c_when_saved, read_table, start_sweep

from resnet_cifar.sweep_results import SUMMARY_ROWS

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture
def ray_module(monkeypatch):
    """Ray, its usage reporting off (nothing leaves the machine); skipped where it is not installed."""
    if importlib.util.find_spec('ray') is None:
        skip_here_fail_in_ci(
            "Ray is not installed: pip install -e '.[ray]'", 'CI installs the project with its ray extra'
        )
    monkeypatch.setenv('RAY_USAGE_STATS_ENABLED', '0')
    import ray

    yield ray
    ray.shutdown()


def test_ray_runs_the_same_sweep_stops_on_ctrl_c_and_resumes(ray_module, subset, tmp_path):
    """The grid of the local sweep on Ray: on a local Ray cluster that the sweep starts, stopped by
    Ctrl-C; then run again on a cluster it joins at an address, it resumes and ends with a table of
    the local sweep's shape."""
    root, steps = str(tmp_path / 'ray'), 60
    args = [f'--root={root}', f'--data_dir={subset}', '--grid=lrn_rate=[0.1,0.2]', '--seeds=1', '--engine=ray']
    args += [f'--hparams_override={TINY_OVERRIDE},train_steps={steps},lr_boundaries=[30]', '--validation_size=200']
    args += ['--eval_every_steps=20', '--milestones=0.05,0.99']
    trials = [f'lrn_rate={value}/seed_0' for value in (0.1, 0.2)]  # one seed: the two run side by side
    process = start_sweep(*args)
    out, errors = ctrl_c_when_saved(process, [os.path.join(root, trial) for trial in trials])
    assert process.returncode == 130 and errors.splitlines()[-1].startswith('stopped by SIGINT'), errors
    saved = [trial for trial in trials if os.path.exists(os.path.join(root, trial, 'checkpoint'))]
    assert saved and f'{saved[0]}: training' in out
    for trial in saved:
        assert_stopped_with_a_checkpoint(os.path.join(root, trial), steps)
    for trial in trials:  # every trainer ended, those that had started too
        assert not os.path.exists(os.path.join(root, trial, 'owner.json'))

    cluster = ray_module.init(num_cpus=2, include_dashboard=False, logging_level='ERROR')
    address = cluster.address_info['gcs_address']
    again = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'sweep.py'), *args, f'--ray_address={address}'],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr
    for trial in saved:
        assert 'resumed from' in open(os.path.join(root, f'{trial}.log')).read()
    table = read_table(root)
    assert list(next(iter(table.values()))) == HEADER  # as the local engine's
    assert sorted(table) == sorted((value, row) for value in ('0.1', '0.2') for row in ('0', *SUMMARY_ROWS))
