"""scripts/sweep.py: tiny seeds trained end to end (each in a subprocess, as the sweep runs them), their
tables, a rerun that trains nothing, a validation split, a failing seed, the comparison of roots, and the
one-line errors."""

import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_OVERRIDE, assert_user_error

from resnet_cifar.errors import UserError

SCRIPT = os.path.join(ROOT, 'scripts', 'sweep.py')
OVERRIDE = f'{TINY_OVERRIDE},train_steps=6,lr_boundaries=[3]'
MILESTONES = ('0.05', '0.99')  # reached at the first eval, and never


def _load_sweep():
    spec = importlib.util.spec_from_file_location('sweep', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep = _load_sweep()


def recipe(subset, **values):
    return sweep.Recipe(hparams_override=OVERRIDE, data_dir=subset, eval_every_steps=3, **values)


def read_table(root):
    with open(os.path.join(root, 'results.csv'), newline='') as f:
        return {row['seed']: row for row in csv.DictReader(f)}


def result(root, seed):
    with open(os.path.join(root, f'seed_{seed}', 'sweep_result.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def sweep_on_test_split(subset, tmp_path_factory):
    """Two seeds, two at a time, evaluated on the test split."""
    root = str(tmp_path_factory.mktemp('sweep') / 'root')
    failed = sweep.run_sweep(root, [0, 1], recipe(subset), parallel=2, milestones=MILESTONES)
    assert failed == []
    return root


@pytest.fixture(scope='module')
def validation_sweep(subset, tmp_path_factory):
    """Seeds 0 and 1 with a validation split; seed 1's folder holds a broken run, so it fails."""
    root = str(tmp_path_factory.mktemp('sweep') / 'validation')
    os.makedirs(os.path.join(root, 'seed_1'))
    with open(os.path.join(root, 'seed_1', 'hparams.json'), 'w') as f:
        f.write('{')
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        failed = sweep.run_sweep(root, [0, 1], recipe(subset, validation_size=200), parallel=2, milestones=MILESTONES)
    return root, failed, errors.getvalue()


def test_tables_have_a_row_per_seed_and_the_statistics(sweep_on_test_split):
    table = read_table(sweep_on_test_split)
    assert list(table) == ['0', '1', 'mean', 'std', 'min', 'max']
    for column in ('test_precision', 'test_precision_flip'):
        values = [result(sweep_on_test_split, seed)[column] for seed in (0, 1)]
        assert all(0 <= value <= 1 for value in values)
        for seed in (0, 1):
            assert float(table[str(seed)][column]) == pytest.approx(values[seed], abs=1e-6)
        assert float(table['mean'][column]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(table['std'][column]) == pytest.approx(statistics.stdev(values), abs=1e-6)
        assert float(table['min'][column]) == pytest.approx(min(values), abs=1e-6)
        assert float(table['max'][column]) == pytest.approx(max(values), abs=1e-6)
    assert 'val_test_precision' not in table['0']  # no validation split, no such column

    markdown = open(os.path.join(sweep_on_test_split, 'results.md')).read()
    assert 'python scripts/sweep.py' in markdown and OVERRIDE in markdown
    values = [result(sweep_on_test_split, seed)['test_precision'] for seed in (0, 1)]
    mean, std = statistics.mean(values), statistics.stdev(values)
    assert f'| mean ± std (n) | {mean:.4f} ± {std:.4f} (2) |' in markdown
    assert markdown.count('\n| 0 |') == 1 and markdown.count('\n| 1 |') == 1


def test_milestones_come_from_the_runs_history(sweep_on_test_split):
    table = read_table(sweep_on_test_split)
    for seed in ('0', '1'):
        assert table[seed]['steps_to_0.05'] == '3'  # the first eval
        assert 0 < int(table[seed]['seconds_to_0.05']) < 600
        assert table[seed]['steps_to_0.99'] == table[seed]['seconds_to_0.99'] == ''
        assert result(sweep_on_test_split, int(seed))['fresh'] is True


def test_a_resumed_seed_has_steps_but_no_seconds(sweep_on_test_split, tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(sweep_on_test_split, root)
    path = os.path.join(root, 'seed_1', 'sweep_result.json')
    resumed = {**result(root, 1), 'fresh': False}
    with open(path, 'w') as f:
        json.dump(resumed, f)
    sweep.summarize(root, MILESTONES)
    table = read_table(root)
    assert table['1']['steps_to_0.05'] == '3' and table['1']['seconds_to_0.05'] == ''
    assert float(table['mean']['seconds_to_0.05']) == float(table['0']['seconds_to_0.05'])  # seed 0's alone


def test_running_again_trains_nothing(sweep_on_test_split, subset, capsys):
    logs = {seed: os.path.getsize(os.path.join(sweep_on_test_split, f'seed_{seed}.log')) for seed in (0, 1)}
    before = read_table(sweep_on_test_split)
    assert sweep.run_sweep(sweep_on_test_split, [0, 1], recipe(subset), parallel=2, milestones=MILESTONES) == []
    assert '2 of 2 seeds already have results' in capsys.readouterr().out
    assert {seed: os.path.getsize(os.path.join(sweep_on_test_split, f'seed_{seed}.log')) for seed in (0, 1)} == logs
    assert read_table(sweep_on_test_split) == before


def test_another_recipe_in_the_same_root_is_refused(sweep_on_test_split, subset):
    before = sorted(os.listdir(sweep_on_test_split))
    with pytest.raises(UserError) as error:
        sweep.run_sweep(sweep_on_test_split, [2], recipe(subset, validation_size=100))
    assert error.value.key == 'root' and 'validation_size 0 (now 100)' in error.value.line()
    assert sorted(os.listdir(sweep_on_test_split)) == before  # nothing launched


def test_validation_split_measures_the_checkpoint_best_on_validation(validation_sweep):
    root, failed, _ = validation_sweep
    assert failed == [1]
    chosen = result(root, 0)
    history = list(csv.DictReader(open(os.path.join(root, 'seed_0', 'eval', 'validation', 'history.csv'))))
    best = max(float(row['precision']) for row in history)
    assert chosen['val_step'] == min(int(row['step']) for row in history if float(row['precision']) == best)
    assert chosen['val_precision'] == pytest.approx(best, abs=1e-6)
    assert chosen['val_checkpoint'].endswith(f'ckpt-{chosen["val_step"]}')
    assert 0 <= chosen['val_test_precision'] <= 1
    if chosen['val_step'] == 6:  # the final checkpoint, measured the same way twice
        assert chosen['val_test_precision'] == pytest.approx(chosen['test_precision'])
    table = read_table(root)
    assert list(table) == ['0', 'mean', 'std', 'min', 'max']  # the failed seed has no row
    assert float(table['0']['val_test_precision']) == pytest.approx(chosen['val_test_precision'], abs=1e-6)
    assert table['0']['steps_to_0.05'] == table['0']['seconds_to_0.05'] == ''  # evals were on validation
    log = open(os.path.join(root, 'seed_0.log')).read()
    assert '--eval_split=validation' in log and '--keep_checkpoints=12' in log


def test_a_failed_seed_is_one_line_naming_its_log(validation_sweep):
    root, _, errors = validation_sweep
    lines = [line for line in errors.splitlines() if line.startswith('seed ')]
    assert len(lines) == 1 and lines[0].startswith('seed 1 failed: training exited with code 2')
    assert lines[0].endswith(f'see {os.path.join(root, "seed_1.log")}')
    assert 'unreadable run configuration' in open(os.path.join(root, 'seed_1.log')).read()
    assert not os.path.exists(os.path.join(root, 'seed_1', 'sweep_result.json'))


def test_compare_prints_the_difference_and_its_standard_error(sweep_on_test_split, tmp_path):
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'results.csv').write_text(
        'seed,test_precision\n0,0.5\n1,0.6\n2,0.7\nmean,0.6\nstd,0.1\nmin,0.5\nmax,0.7\n'
    )
    text = sweep.compare([sweep_on_test_split, str(other)])
    values = [result(sweep_on_test_split, seed)['test_precision'] for seed in (0, 1)]
    mean, std = statistics.mean(values), statistics.stdev(values)
    diff, se = 0.6 - mean, math.sqrt(std**2 / 2 + 0.01 / 3)
    row = next(line for line in text.splitlines() if line.startswith('| test_precision |'))
    assert f'{mean:.4f} ± {std:.4f} (2)' in row and '0.6000 ± 0.1000 (3)' in row
    assert f'{diff:+.4f} ± {se:.4f}, {diff / se:+.1f} SE' in row
    assert f'{other} − {sweep_on_test_split}' in text.splitlines()[0]
    with pytest.raises(UserError) as error:
        sweep.compare([sweep_on_test_split, str(tmp_path / 'missing')])
    assert error.value.key == 'compare' and 'results.csv' in error.value.line()


def test_seeds_are_a_count_or_a_list():
    assert sweep.parse_seeds('3') == [0, 1, 2]
    assert sweep.parse_seeds('3,7') == [3, 7]
    assert sweep.parse_seeds('7,') == [7]
    for bad in ('0', '-1', 'a', '3,3', ','):
        with pytest.raises(UserError):
            sweep.parse_seeds(bad)
    assert sweep.parse_milestones('0.60, 0.65') == ['0.60', '0.65'] and sweep.parse_milestones('') == []
    with pytest.raises(UserError):
        sweep.parse_milestones('0.6,65')


def test_a_bad_flag_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, SCRIPT, f'--root={tmp_path / "root"}', '--hparams=nope'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_user_error(result, '--hparams', "unknown preset 'nope'")
    assert not os.path.exists(tmp_path / 'root')
