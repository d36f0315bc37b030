"""Sweeps end to end on tiny runs of the real subset, each trial a trainer process as the sweep runs
them: a grid of 2 values x 2 seeds with a validation split and a trial made to fail, its tables,
TensorBoard's HParams dashboard read back over HTTP, a rerun that retries only what is missing,
an old sweep root, and Ctrl-C then a rerun that resumes (on Ray: test_sweep_ray.py)."""

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, TINY_OVERRIDE

from resnet_cifar import evaluation, sweep, sweep_plan, sweep_results
from resnet_cifar.sweep_engines import LocalEngine
from resnet_cifar.sweep_plan import SweepRecipe

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

OLD_SWEEP = os.path.join(ROOT, 'tests', 'data', 'old_sweep_v1')  # written by the sweep before grids
GRID = {'lrn_rate': [0.1, 0.2]}
BROKEN = 'lrn_rate=0.2/seed_1'  # its folder holds a damaged hparams.json: its trainer fails
MILESTONES = ('0.05', '0.99')  # reached at the first eval, and never
# results.csv's columns for GRID with a validation split and MILESTONES, whichever engine ran it.
HEADER = ['lrn_rate', 'seed', 'test_precision', 'test_precision_flip', 'val_step', 'val_precision']
HEADER += ['val_test_precision', 'seconds', 'steps_to_0.05', 'seconds_to_0.05', 'steps_to_0.99', 'seconds_to_0.99']
HEADER += ['val_rank']
STATUSES = ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE', 'STATUS_RUNNING']  # sessions the dashboard lists


def recipe(subset, train_steps=6, **values):
    override = f'{TINY_OVERRIDE},train_steps={train_steps},lr_boundaries=[{train_steps // 2}]'
    return SweepRecipe(hparams_override=override, data_dir=subset, **values)


def read_table(root):
    """results.csv as {(lrn_rate or '', seed or summary row): row}."""
    with open(os.path.join(root, 'results.csv'), newline='') as f:
        return {(row.get('lrn_rate', ''), row['seed']): row for row in csv.DictReader(f)}


def result(root, trial):
    with open(os.path.join(root, trial, 'sweep_result.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def grid_sweep(subset, tmp_path_factory):
    """lrn_rate=[0.1,0.2] x seeds 0, 1 on the local engine, two at a time, with a validation split;
    the folder of lrn_rate=0.2 seed 1 holds a damaged hparams.json."""
    root = str(tmp_path_factory.mktemp('sweep') / 'grid')
    os.makedirs(os.path.join(root, BROKEN))
    with open(os.path.join(root, BROKEN, 'hparams.json'), 'w') as f:
        f.write('{')
    out, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errors):
        failed = sweep.run_sweep(
            root, recipe(subset, validation_size=200, eval_every_steps=3), GRID, [0, 1], LocalEngine(2), MILESTONES
        )
    return root, failed, out.getvalue(), errors.getvalue()


def test_a_failing_trial_is_one_line_and_the_others_go_on(grid_sweep):
    root, failed, _, errors = grid_sweep
    assert failed == [BROKEN]
    lines = [line for line in errors.splitlines() if line.startswith('lrn_rate=')]
    [line] = [line for line in lines if ': measuring: evaluated ' not in line]  # progress of a long eval
    assert line.startswith(f'{BROKEN} failed: training exited with code 2 (error: ')
    assert os.path.join(root, BROKEN, 'hparams.json') in line
    assert line.endswith(f'; see {os.path.join(root, BROKEN)}.log')
    assert not os.path.exists(os.path.join(root, BROKEN, 'sweep_result.json'))
    for trial in ('lrn_rate=0.1/seed_0', 'lrn_rate=0.1/seed_1', 'lrn_rate=0.2/seed_0'):
        assert 0 <= result(root, trial)['test_precision'] <= 1


def test_each_trial_has_a_row_and_each_configuration_its_statistics(grid_sweep):
    root = grid_sweep[0]
    table = read_table(root)
    summary = ['mean', 'std', 'min', 'max']
    assert list(next(iter(table.values()))) == HEADER
    blocks = {value: [s for v, s in table if v == value] for value in ('0.1', '0.2')}
    assert blocks == {'0.1': ['0', '1', *summary], '0.2': ['0', *summary]}
    assert [v for v, _ in table] == sorted((v for v, _ in table), key=lambda v: table[v, 'mean']['val_rank'])
    for column in ('test_precision', 'test_precision_flip', 'val_precision', 'val_test_precision'):
        values = [result(root, f'lrn_rate=0.1/seed_{seed}')[column] for seed in (0, 1)]
        for seed in (0, 1):
            assert float(table['0.1', str(seed)][column]) == pytest.approx(values[seed], abs=1e-6)
        assert float(table['0.1', 'mean'][column]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(table['0.1', 'std'][column]) == pytest.approx(statistics.stdev(values), abs=1e-6)
        assert float(table['0.1', 'min'][column]) == pytest.approx(min(values), abs=1e-6)
        assert float(table['0.1', 'max'][column]) == pytest.approx(max(values), abs=1e-6)
        alone = result(root, 'lrn_rate=0.2/seed_0')[column]
        assert float(table['0.2', 'mean'][column]) == pytest.approx(alone, abs=1e-6)
        assert table['0.2', 'std'][column] == ''  # one seed: no sample std
    assert table['0.1', '0']['steps_to_0.05'] == ''  # evals were on the validation split
    log = open(os.path.join(root, 'lrn_rate=0.1', 'seed_0.log')).read()
    assert '--eval_split=validation' in log and ',lrn_rate=0.1' in log


def test_configurations_are_ranked_on_validation_and_the_chosen_one_marked(grid_sweep):
    root = grid_sweep[0]
    table = read_table(root)
    means = {value: float(table[value, 'mean']['val_precision']) for value in ('0.1', '0.2')}
    chosen = max(means, key=lambda value: (means[value], value == '0.1'))  # a tie keeps the grid's order
    assert {table[value, 'mean']['val_rank'] for value in means} == {'1', '2'}
    assert table[chosen, 'mean']['val_rank'] == '1' and table[chosen, '0']['val_rank'] == '1'
    markdown = open(os.path.join(root, 'results.md')).read()
    test_precision = float(table[chosen, 'mean']['val_test_precision'])
    assert f'Chosen on validation: lrn_rate={chosen}, ' in markdown
    assert f'its test precision (the checkpoints best on validation): {test_precision:.4f}' in markdown
    assert markdown.startswith('# Sweep of ResNet-8 on cifar10: 2 configurations, 3 trials')


def test_the_measurements_progress_lines_name_their_trial(grid_sweep, tmp_path, monkeypatch, caplog):
    """Among the other trials' lines (on Ray, as they end), each progress line says which trial it measures."""
    root = str(tmp_path / 'grid')
    shutil.copytree(grid_sweep[0], root)
    plan = sweep_plan.read_plan(root)
    trial = next(trial for trial in plan.recorded if trial.name == 'lrn_rate=0.1/seed_0')
    monkeypatch.setattr(evaluation, 'PROGRESS_EVERY_SECS', 0)
    with caplog.at_level(logging.INFO, logger='absl'):  # whatever verbosity an earlier test left
        sweep.measure_trial(plan, trial, 0)
    progress = [record.getMessage() for record in caplog.records if 'evaluated ' in record.getMessage()]
    assert progress and all(line.startswith('lrn_rate=0.1/seed_0: measuring: evaluated ') for line in progress)


def _tensorboard(root):
    """TensorBoard itself serving `root` on 127.0.0.1; returns a function posting to its HParams API."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, '--logdir', root, '--host', '127.0.0.1', '--port', '0', '--load_fast', 'false'])
    url = board.launch()

    def post(route, body):
        request = urllib.request.Request(
            f'{url}data/plugin/hparams/{route}', json.dumps(body).encode(), {'Content-Type': 'application/json'}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    return post


def test_tensorboard_shows_the_trials_in_its_hparams_dashboard(grid_sweep):
    root = grid_sweep[0]
    post = _tensorboard(root)
    deadline = time.time() + 120
    while True:  # TensorBoard reads the folder in the background
        experiment = post('experiment', {'experimentName': ''})
        metrics = {info['name']['tag']: info['displayName'] for info in experiment.get('metricInfos', [])}
        groups = post('session_groups', {'experimentName': '', 'allowedStatuses': STATUSES, 'sliceSize': 100})
        if len(groups.get('sessionGroups', [])) == 3 and metrics or time.time() > deadline:
            break
        time.sleep(1)
    assert metrics['sweep/test_precision'] == 'test precision'
    assert set(metrics) == {f'sweep/{name}' for name in ('test_precision', 'test_precision_flip', 'val_precision',
                                                          'val_test_precision', 'seconds')}  # fmt: skip
    infos = {info['name']: info for info in experiment['hparamInfos']}
    assert infos['lrn_rate']['domainDiscrete'] == [0.1, 0.2]
    assert {'seed', 'weight_decay_rate', 'preset', 'dataset', 'validation_size'} <= set(infos)
    sessions = {group['name']: group for group in groups['sessionGroups']}
    assert set(sessions) == {'lrn_rate=0.1/seed_0', 'lrn_rate=0.1/seed_1', 'lrn_rate=0.2/seed_0'}
    for name, group in sessions.items():
        assert group['hparams']['lrn_rate'] == float(name[len('lrn_rate=') : name.index('/')])
        assert group['hparams']['seed'] == int(name[-1]) and group['hparams']['num_residual_units'] == 1
        values = {value['name']['tag']: value['value'] for value in group['metricValues']}
        for metric in ('test_precision', 'test_precision_flip', 'val_precision', 'val_test_precision'):
            assert values[f'sweep/{metric}'] == pytest.approx(result(root, name)[metric], abs=1e-6)
        assert values['sweep/seconds'] > 0


def test_a_rerun_retries_only_what_is_missing(grid_sweep, subset, capsys):
    root = grid_sweep[0]
    os.remove(os.path.join(root, BROKEN, 'hparams.json'))  # the user fixes what was broken
    others = ('lrn_rate=0.1/seed_0', 'lrn_rate=0.1/seed_1', 'lrn_rate=0.2/seed_0')
    logs = {trial: os.path.getsize(os.path.join(root, f'{trial}.log')) for trial in others}
    recipe_again = recipe(subset, validation_size=200, eval_every_steps=3)
    assert sweep.run_sweep(root, recipe_again, GRID, [0, 1], LocalEngine(2), MILESTONES) == []
    out = capsys.readouterr().out
    assert '3 of 4 trials already have results' in out and f'{BROKEN}: training, output in' in out
    assert {trial: os.path.getsize(os.path.join(root, f'{trial}.log')) for trial in others} == logs
    assert ('0.2', '1') in read_table(root) and 'Sweep of ResNet-8 on cifar10: 2 configurations, 4 trials' in out


def test_an_old_sweep_root_still_summarizes_and_compares(grid_sweep, tmp_path):
    root = str(tmp_path / 'old')
    shutil.copytree(OLD_SWEEP, root)
    sweep.summarize(root, MILESTONES)
    with open(os.path.join(root, 'results.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    assert [row['seed'] for row in rows] == ['0', 'mean', 'std', 'min', 'max']
    old = result(root, 'seed_0')
    assert float(rows[0]['test_precision']) == pytest.approx(old['test_precision'], abs=1e-6)
    history = list(csv.DictReader(open(os.path.join(root, 'seed_0', 'eval', 'history.csv'))))
    launched = sweep_results._epoch(old['launched'])
    assert int(rows[0]['seconds']) == sweep_results._epoch(history[-1]['time']) - launched
    first = next(row for row in history if float(row['precision']) >= 0.05)
    assert rows[0]['steps_to_0.05'] == first['step']
    assert int(rows[0]['seconds_to_0.05']) == sweep_results._epoch(first['time']) - launched
    text = sweep_results.compare([root, grid_sweep[0]])
    head = text.splitlines()[0]
    assert f'| metric | {root} | {grid_sweep[0]} [lrn_rate=0.1] | {grid_sweep[0]} [lrn_rate=0.2] |' in head
    row = next(line for line in text.splitlines() if line.startswith('| test_precision |'))
    assert f'{old["test_precision"]:.4f} (1)' in row


def start_sweep(*args, env=None):
    """scripts/sweep.py in a session of its own, as a terminal runs it: a Ctrl-C reaches its group."""
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'scripts', 'sweep.py'), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )


def ctrl_c_when_saved(process, folders, timeout=300):
    """Sends SIGINT to the sweep's process group once a trainer has saved a checkpoint; returns its output."""
    deadline = time.time() + timeout
    while not any(os.path.exists(os.path.join(folder, 'checkpoint')) for folder in folders):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    return process.communicate(timeout=300)


def assert_stopped_with_a_checkpoint(folder, train_steps):
    """The trainer stopped before the end with a checkpoint of its last step, and is gone."""
    log = open(f'{folder}.log').read()
    assert 'stopped by SIGTERM at step' in log, log[-2000:]
    step = int(log.split('stopped by SIGTERM at step ')[1].split(';')[0])
    steps = [int(name[len('ckpt-') : -len('.index')]) for name in os.listdir(folder) if name.endswith('.index')]
    assert max(steps) == step < train_steps
    assert not os.path.exists(os.path.join(folder, 'owner.json'))  # the trainer ended, releasing the folder


def test_ctrl_c_stops_the_trial_keeping_its_checkpoint_and_a_rerun_resumes(subset, tmp_path):
    root, steps = str(tmp_path / 'stop'), 60
    args = [f'--root={root}', f'--data_dir={subset}', f'--hparams_override={TINY_OVERRIDE},train_steps={steps}']
    args += ['--seeds=1', '--eval_every_steps=20']
    out, errors = ctrl_c_when_saved(start_sweep(*args), [os.path.join(root, 'seed_0')])
    assert errors.splitlines()[-1] == 'stopped by SIGINT; run the same command to resume', errors
    assert 'Traceback' not in errors and not os.path.exists(os.path.join(root, 'owner.json'))
    assert_stopped_with_a_checkpoint(os.path.join(root, 'seed_0'), steps)
    rerun = SweepRecipe(hparams_override=f'{TINY_OVERRIDE},train_steps={steps}', data_dir=subset, eval_every_steps=20)
    assert sweep.run_sweep(root, rerun, {}, [0]) == []
    assert 'resumed from' in open(os.path.join(root, 'seed_0.log')).read()
    assert result(root, 'seed_0')['fresh'] is False
