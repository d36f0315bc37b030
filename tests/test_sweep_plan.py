"""What a sweep trains, before anything trains: the grid and seeds, the trials' folders, sweep.json
extended by a rerun or refused for another recipe, damaged files read back, the lock on the root,
and the engines' one-line refusals. Fast: no trainer runs here."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, TINY_OVERRIDE

from resnet_cifar import choices, sweep, sweep_engines, sweep_plan, sweep_results
from resnet_cifar.errors import UserError
from resnet_cifar.sweep_plan import SweepRecipe, Trial

OLD_SWEEP = os.path.join(ROOT, 'tests', 'data', 'old_sweep_v1')  # written by the sweep before grids


def recipe(subset, **values):
    return SweepRecipe(**{'hparams_override': f'{TINY_OVERRIDE},train_steps=6', 'data_dir': subset, **values})


def test_a_grid_is_the_override_syntax_with_a_list_per_key():
    assert sweep_plan.parse_grid('lrn_rate=[0.1,0.2],weight_decay_rate=[2e-4,5e-4]') == {
        'lrn_rate': [0.1, 0.2],
        'weight_decay_rate': [2e-4, 5e-4],
    }
    assert sweep_plan.parse_grid('lr_boundaries=[[3],[4,5]],optimizer=[mom,nesterov]') == {
        'lr_boundaries': [[3], [4, 5]],
        'optimizer': ['mom', 'nesterov'],
    }
    assert sweep_plan.parse_grid('') == {}
    [[one, _]] = sweep_plan.parse_grid('lrn_rate=[1,0.5]').values()  # a float hparam's values are floats:
    assert isinstance(one, float) and Trial({'lrn_rate': one}, 0).name == 'lrn_rate=1.0/seed_0'  # 1 is 1.0
    bad = {
        'lrn_rate=0.1': 'expected a list of values like lrn_rate=[1,2]',
        'lr_boundaries=[3,4]': 'lr_boundaries: expected values like [40000,60000,80000], got 3',
        'lrn_rate=[0.1,0.1]': 'not distinct',
        'lrn_rate=[1,1.0]': 'not distinct',
        'lrn_rate=[]': 'expected a list of values',
        'num_classes=[10,100]': "'num_classes' is no hparam a sweep can vary",
        'nope=[1,2]': "'nope' is no hparam",
        'lrn_rate=[0.1': 'unbalanced brackets',
        'use_bottleneck=[1,0]': 'expected values like false, got 1',
    }
    for text, fragment in bad.items():
        with pytest.raises(UserError) as error:
            sweep_plan.parse_grid(text)
        assert error.value.key == 'grid' and fragment in error.value.line(), (text, error.value.line())


def test_trials_are_named_by_their_values_and_seed():
    configurations = sweep_plan.configurations({'lrn_rate': [0.1, 0.2], 'lr_boundaries': [[3, 6], [4]]})
    names = [Trial(values, 7).name for values in configurations]
    assert names == [
        'lrn_rate=0.1,lr_boundaries=3-6/seed_7',
        'lrn_rate=0.1,lr_boundaries=4/seed_7',
        'lrn_rate=0.2,lr_boundaries=3-6/seed_7',
        'lrn_rate=0.2,lr_boundaries=4/seed_7',
    ]
    assert Trial({}, 3).name == 'seed_3'  # no grid: the folders of sweeps of seeds alone


def test_seeds_and_milestones():
    assert sweep_plan.parse_seeds('3') == [0, 1, 2]
    assert sweep_plan.parse_seeds('3,7') == [3, 7]
    assert sweep_plan.parse_seeds('7,') == [7]
    for bad in ('0', '-1', 'a', '3,3', ',', '100000000000', '1001', '4294967296,'):  # the last three: bounds
        with pytest.raises(UserError):
            sweep_plan.parse_seeds(bad)
    assert sweep_results.parse_milestones('0.60, 0.65') == ['0.60', '0.65']
    with pytest.raises(UserError):
        sweep_results.parse_milestones('0.6,65')


def test_a_configuration_no_run_could_use_is_refused_naming_it(subset, tmp_path):
    with pytest.raises(UserError) as error:
        sweep_plan.prepare(str(tmp_path / 'root'), recipe(subset), {'lr_boundaries': [[3], [5, 4]]})
    assert error.value.key == 'grid' and error.value.message.startswith('lr_boundaries=5-4: ')
    assert 'lr_boundaries' in error.value.message[len('lr_boundaries=5-4: ') :]
    assert not os.path.exists(tmp_path / 'root')


def test_sweep_json_records_every_trial_and_a_rerun_extends_it(subset, tmp_path):
    root = str(tmp_path / 'root')
    plan = sweep_plan.prepare(root, recipe(subset), {'lrn_rate': [0.1, 0.2]}, seeds=[0])
    assert [trial.name for trial in plan.trials] == ['lrn_rate=0.1/seed_0', 'lrn_rate=0.2/seed_0']
    plan = sweep_plan.prepare(root, recipe(subset), {'lrn_rate': [0.3, 0.1]}, seeds=[0, 1])
    assert [trial.name for trial in plan.trials] == [f'lrn_rate={v}/seed_{s}' for v in (0.3, 0.1) for s in (0, 1)]
    assert [trial.name for trial in plan.recorded] == [
        'lrn_rate=0.1/seed_0',
        'lrn_rate=0.2/seed_0',
        'lrn_rate=0.3/seed_0',
        'lrn_rate=0.3/seed_1',
        'lrn_rate=0.1/seed_1',
    ]
    saved = json.load(open(os.path.join(root, 'sweep.json')))
    assert saved['grid'] == {'lrn_rate': [0.1, 0.2, 0.3]}
    assert saved['trials'][2] == {'folder': 'lrn_rate=0.3/seed_0', 'seed': 0, 'values': {'lrn_rate': 0.3}}
    assert sweep_plan.read_plan(root).recorded == plan.recorded


def test_another_base_recipe_or_grid_is_refused(subset, tmp_path):
    root = str(tmp_path / 'root')
    sweep_plan.prepare(root, recipe(subset), {'lrn_rate': [0.1]}, seeds=[0])
    before = open(os.path.join(root, 'sweep.json')).read()
    others = {
        'validation_size 0 (now 100)': (recipe(subset, validation_size=100), {'lrn_rate': [0.1]}),
        'hparams.train_steps 6 (now 8)': (recipe(subset, hparams_override='train_steps=8'), {'lrn_rate': [0.1]}),
        'grid keys lrn_rate (now lrn_rate, weight_decay_rate)': (
            recipe(subset),
            {'lrn_rate': [0.1], 'weight_decay_rate': [0.001]},
        ),
    }
    for fragment, (other, grid) in others.items():
        with pytest.raises(UserError) as error:
            sweep_plan.prepare(root, other, grid, seeds=[0])
        assert error.value.key == 'root' and fragment in error.value.line(), error.value.line()
    assert open(os.path.join(root, 'sweep.json')).read() == before


def test_a_sweep_json_from_before_grids_is_a_sweep_of_seeds(tmp_path):
    plan = sweep_plan.read_plan(OLD_SWEEP)
    assert plan.grid == {} and [trial.name for trial in plan.recorded] == ['seed_0']
    assert plan.recipe.eval_every_steps == 2 and plan.hparams.train_steps == 4


@pytest.mark.parametrize(
    ('change', 'fragment'),
    [
        (lambda s: '{"hparams": "resnet32", ', 'not valid JSON'),
        (lambda s: '[]', 'expected a JSON object, got a list'),
        (lambda s: json.dumps({**json.loads(s), 'validation_size': '5'}), 'validation_size: expected an integer >= 0'),
        (lambda s: json.dumps({**json.loads(s), 'hparams.train_steps': -4}), 'hparam train_steps'),
        (lambda s: json.dumps({**json.loads(s), 'grid': {'lrn_rate': 0.1}}), 'grid: lrn_rate: expected a list'),
        (lambda s: json.dumps({**json.loads(s), 'trials': [{'folder': 'x', 'seed': 0, 'values': {}}]}), 'trials'),
    ],
)
def test_a_damaged_sweep_json_is_one_line_and_left_as_it_is(tmp_path, change, fragment):
    root = str(tmp_path / 'old')
    shutil.copytree(OLD_SWEEP, root)
    path = os.path.join(root, 'sweep.json')
    with open(path, 'w') as f:
        f.write(change(open(os.path.join(OLD_SWEEP, 'sweep.json')).read()))
    damaged = open(path).read()
    with pytest.raises(UserError) as error:
        sweep.summarize(root)
    line = error.value.line()
    assert path in line and fragment in line and 'use another root' in line and '\n' not in line, line
    assert open(path).read() == damaged


@pytest.mark.parametrize(
    ('key', 'value', 'fragment'),
    [
        ('test_precision', 1.5, 'test_precision: expected a number in [0, 1], got 1.5'),
        ('fresh', 'yes', "fresh: expected true or false, got 'yes'"),
        ('launched', 'yesterday', 'launched: expected a UTC time'),
        ('seed', None, 'seed: expected an integer >= 0'),
    ],
)
def test_a_damaged_result_is_one_line_naming_the_file_and_key(tmp_path, key, value, fragment):
    root = str(tmp_path / 'old')
    shutil.copytree(OLD_SWEEP, root)
    path = os.path.join(root, 'seed_0', 'sweep_result.json')
    result = json.load(open(path))
    json.dump({**result, key: value}, open(path, 'w'))
    with pytest.raises(UserError) as error:
        sweep.summarize(root)
    assert error.value.line().startswith(f'{path}: {fragment}') and 'measures the trial anew' in error.value.line()


def test_a_damaged_history_or_table_is_one_line(tmp_path):
    root = str(tmp_path / 'old')
    shutil.copytree(OLD_SWEEP, root)
    history = os.path.join(root, 'seed_0', 'eval', 'history.csv')
    with open(history, 'a') as f:
        f.write('six,test,0.5,2.0,ckpt-6,2026-11-30T14:33:01Z\n')
    with pytest.raises(UserError) as error:
        sweep.summarize(root)
    assert error.value.line().startswith(f'{history}: unreadable eval history')
    table = os.path.join(root, 'results.csv')
    with open(table, 'a') as f:
        f.write('1,abc,0.1,,,,\n')
    with pytest.raises(UserError) as error:
        sweep_results.compare([root, OLD_SWEEP])
    assert error.value.line().startswith(f'compare: {table}: line 7, test_precision: expected a number')


def test_a_second_sweep_on_a_root_is_refused_in_one_line(subset, tmp_path):
    """The first sweep holds the root (ROOT/owner.json) while it runs: here a process that holds it."""
    root = str(tmp_path / 'root')
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            textwrap.dedent(f"""
                import sys, time
                from resnet_cifar import ownership
                with ownership.Ownership({root!r}, 'sweep', 'root'):
                    print('holding', flush=True)
                    time.sleep(120)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == 'holding\n'
        with pytest.raises(UserError) as error:
            sweep.run_sweep(root, recipe(subset), {'lrn_rate': [0.1]}, seeds=[0])
        assert error.value.key == 'root'
        assert f'is in use by sweep process {holder.pid}' in error.value.line()
        assert sorted(os.listdir(root)) == ['owner.json']  # nothing recorded, nothing launched
    finally:
        holder.kill()
        holder.wait()


def test_trainer_flags_keep_every_checkpoint_with_a_validation_split(subset, tmp_path):
    plan = sweep_plan.prepare(str(tmp_path / 'r'), recipe(subset, validation_size=100, eval_every_steps=3), {}, [2])
    args = sweep_plan.trainer_args(plan, plan.trials[0])
    assert f'--log_root={tmp_path / "r" / "seed_2"}' in args and '--seed=2' in args
    assert '--eval_split=validation' in args and '--keep_checkpoints=12' in args  # saves at 3 and 6, plus 10
    plan = sweep_plan.prepare(str(tmp_path / 'g'), recipe(subset), {'lrn_rate': [0.5]}, [0])
    assert f'--hparams_override={TINY_OVERRIDE},train_steps=6,lrn_rate=0.5' in sweep_plan.trainer_args(
        plan, plan.trials[0]
    )


def test_engines_refuse_what_they_cannot_do(monkeypatch):
    with pytest.raises(UserError) as error:
        sweep_engines.RayEngine(trial_cpus=0)
    assert error.value.key == 'trial_cpus'
    monkeypatch.setitem(sys.modules, 'ray', None)  # as where Ray is not installed
    with pytest.raises(UserError) as error:
        sweep_engines.RayEngine()
    assert error.value.line() == f'engine: Ray is not installed; install it with: {choices.install_command("ray")}'
    monkeypatch.chdir(ROOT)  # a checkout: installed editable, as README sets it up
    assert choices.install_command('ray') == "pip install -e '.[ray]'"
    monkeypatch.chdir(os.path.dirname(ROOT))
    assert choices.install_command('ray') == f"pip install -e '{ROOT}[ray]'"


def test_a_trial_whose_folder_the_driver_cannot_see_fails_in_one_line(subset, tmp_path):
    """A trainer on another node reported success, but its folder is not on storage this machine sees."""
    plan = sweep_plan.prepare(str(tmp_path / 'root'), recipe(subset), {'lrn_rate': [0.1]}, seeds=[0])
    with pytest.raises(UserError) as error:
        sweep.measure_trial(plan, plan.trials[0], outcome=0)
    assert error.value.line() == (
        f'the trial ended, but {plan.folder(plan.trials[0])} is not visible from this machine: the sweep root '
        'must be on storage every node sees (docs/sweeps.md)'
    )
