"""What a sweep trains: a base recipe, a grid of hparam values, and seeds, giving trials, each a run
folder below the sweep's root. ROOT/sweep.json records them, so that running again with more values
or seeds extends the sweep, while another base recipe is refused.

    grid = sweep_plan.parse_grid('lrn_rate=[0.1,0.2],weight_decay_rate=[2e-4,5e-4]')
    plan = sweep_plan.prepare('sweeps/lr', SweepRecipe(data_dir='data'), grid, seeds=[0, 1])

A trial's folder is named by its grid values and seed: ROOT/lrn_rate=0.1,weight_decay_rate=0.0002/seed_0
(ROOT/seed_0 without a grid, as sweeps of seeds alone always were).
"""

import dataclasses
import itertools
import json
import os
import re

import cifar_input
import resnet_model
from resnet_cifar import atomic_write, datasets, json_files, presets, run_config
from resnet_cifar.choices import DTYPE_POLICIES, is_preset_file
from resnet_cifar.errors import UserError
from resnet_cifar.hparams_check import make_hparams

SETTINGS = 'sweep.json'
CHECKPOINT_EVERY = run_config.RunConfig.__dataclass_fields__['checkpoint_every_steps'].default


@dataclasses.dataclass(frozen=True)
class SweepRecipe:
    """What every trial of a sweep trains before the grid's values: resnet_main.py's flags of the same names."""

    hparams: str = 'resnet32'
    hparams_override: str = ''
    data_dir: str | None = None  # None: the shared CIFAR-10 subset beside the checkout, if it is there
    dataset: str = 'cifar10'
    validation_size: int = 0
    eval_every_steps: int = 1000
    dtype: str = 'float32'


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of the sweep: a configuration of the grid (`values`, hparam -> value) and a seed."""

    values: dict
    seed: int

    @property
    def config_folder(self):
        """The configuration's folder name: its values as `key=value,...` ('' without a grid)."""
        return ','.join(f'{key}={_short(value)}' for key, value in self.values.items())

    @property
    def name(self):
        """The trial's folder, relative to the root."""
        return os.path.join(self.config_folder, f'seed_{self.seed}')


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked sweep: its root, base recipe (absolute paths) and HParams, its grid (every value
    recorded so far), the trials asked for now, and every trial recorded."""

    root: str
    recipe: SweepRecipe
    hparams: resnet_model.HParams
    grid: dict
    trials: list
    recorded: list

    def folder(self, trial):
        return os.path.join(self.root, trial.name)

    def log(self, trial):
        return self.folder(trial) + '.log'

    def trial_hparams(self, trial):
        return presets.build_hparams(self.hparams, trial.values, self.recipe.dataset)


def _short(value):
    """A grid value as a folder name shows it: 0.0002, cosine, true, [3,6] as 3-6."""
    if isinstance(value, list):
        return '-'.join(map(_short, value))
    return re.sub(r'[^\w.+-]', '-', value if isinstance(value, str) else json.dumps(value))


def override_text(value):
    """A value as --hparams_override takes it."""
    return value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))


MAX_SEEDS = 1000  # trials per configuration: far more than any sweep trains


def parse_seeds(text):
    """'3' -> [0, 1, 2]; '3,7' -> [3, 7]; '7,' -> [7]."""
    try:
        if ',' in text:
            seeds = [int(item) for item in text.split(',') if item.strip()]
        else:
            seeds = list(range(int(text))) if 0 < int(text) <= MAX_SEEDS else []
    except ValueError:
        seeds = []
    if not 0 < len(seeds) <= MAX_SEEDS or min(seeds) < 0 or max(seeds) >= 2**32 or len(set(seeds)) != len(seeds):
        raise UserError(
            f'expected a count N up to {MAX_SEEDS} (seeds 0..N-1) or up to {MAX_SEEDS} distinct seeds from 0 to '
            f'{2**32 - 1} like 3,7; got {text[:60]!r}',
            'seeds',
        )
    return seeds


def parse_grid(text):
    """'lrn_rate=[0.1,0.2],lr_boundaries=[[3],[4]]' -> {'lrn_rate': [0.1, 0.2], 'lr_boundaries': [[3], [4]]}:
    hparams_override's syntax with a list of values per key. Each value is checked as an hparam."""
    try:
        grid = presets.parse_overrides(text)
    except UserError as e:
        raise UserError(e.message, 'grid') from None
    return checked_grid({key: _words(values) for key, values in grid.items()}, 'grid')


def _words(values):
    """'[mom,nesterov]', which is no JSON, as ['mom', 'nesterov']: a list of strings written bare."""
    if not (isinstance(values, str) and values.startswith('[') and values.endswith(']')):
        return values
    items = [item.strip() for item in values[1:-1].split(',')]
    return [item for item in items if item] if all(re.fullmatch(r'[\w.+-]+', item) for item in items) else values


def checked_grid(grid, source):
    """The grid, each value of a float hparam as a float (1 and 1.0 are one value, in one folder);
    refused if its keys are not hparams or its values not distinct lists of values of each hparam's
    type. `source` names where it came from."""
    checked = {}
    for key, values in grid.items():
        if key not in resnet_model.HParams._fields or key == 'num_classes':
            known = ', '.join(field for field in resnet_model.HParams._fields if field != 'num_classes')
            raise UserError(f'{key!r} is no hparam a sweep can vary; hparams: {known}', source)
        default = resnet_model.DEFAULT_HPARAMS._asdict()[key]
        if not isinstance(values, list) or not values:
            example = '[[3,6],[4,8]]' if isinstance(default, list) else '[1,2]'
            raise UserError(f'{key}: expected a list of values like {key}={example}, got {values!r}', source)
        for value in values:
            if not _same_type(value, default):
                raise UserError(
                    f'{key}: expected values like {override_text(default)}, got {override_text(value)}', source
                )
        checked[key] = [float(value) if isinstance(default, float) else value for value in values]
        if len({_short(value) for value in checked[key]}) != len(values):
            raise UserError(f'{key}: the values {values} are not distinct', source)
    return checked


def _same_type(value, default):
    """Whether `value` could stand for `default`: make_hparams checks the rest (ranges, list items)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def configurations(grid):
    """Every combination of the grid's values, the first key's varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _check_data(recipe):
    """The data folder holds the dataset, with room for the validation split; returns its absolute path."""
    data_dir = datasets.data_dir_or_shared(recipe.data_dir)
    if not data_dir:
        raise UserError(
            f'needed: the folder of the binary batch files (there is no {datasets.SHARED_SUBSET})', 'data_dir'
        )
    train, test = datasets.data_patterns(recipe.dataset, data_dir)
    cifar_input.list_files(test, recipe.dataset, 'data_dir')
    files = cifar_input.list_files(train, recipe.dataset, 'data_dir')
    count = sum(os.path.getsize(f) // datasets.record_bytes(recipe.dataset) for f in files)
    if not 0 <= recipe.validation_size < count:
        raise UserError(f'expected 0 up to {count - 1}, the training images in {data_dir}', 'validation_size')
    return os.path.abspath(data_dir)


def _settings(recipe, hps, grid, trials):
    """sweep.json's content; the base hparams flat, as hparams.KEY, as sweeps have always recorded them."""
    return {
        **dataclasses.asdict(recipe),
        **{f'hparams.{key}': value for key, value in hps._asdict().items()},
        'grid': grid,
        'trials': [{'folder': trial.name, 'seed': trial.seed, 'values': trial.values} for trial in trials],
    }


def check(recipe, grid=None):
    """The recipe and grid checked (preset, overrides, data, every configuration of the grid), before
    anything is written: (the recipe with absolute paths, its HParams, the grid)."""
    grid = checked_grid(grid or {}, 'grid')
    if recipe.dtype not in DTYPE_POLICIES:
        raise UserError(f'expected one of {", ".join(DTYPE_POLICIES)}, got {recipe.dtype!r}', 'dtype')
    hps = presets.build_hparams(recipe.hparams, recipe.hparams_override, recipe.dataset)
    for values in configurations(grid):
        try:
            trial_hps = presets.build_hparams(hps, values, recipe.dataset)
        except UserError as e:
            raise UserError(f'{Trial(values, 0).config_folder}: {e.message}', 'grid') from None
        run_config.RunConfig('', recipe.dataset, hparams=trial_hps, eval_every_steps=recipe.eval_every_steps)
    preset = os.path.abspath(recipe.hparams) if is_preset_file(recipe.hparams) else recipe.hparams
    return dataclasses.replace(recipe, hparams=preset, data_dir=_check_data(recipe)), hps, grid


def prepare(root, recipe, grid=None, seeds=(0,)):
    """The sweep checked and recorded in ROOT/sweep.json with the trials of earlier runs; refused if
    the root holds another base recipe or a grid of other keys. Writes nothing else."""
    recipe, hps, grid = check(recipe, grid)
    trials = [Trial(values, seed) for values in configurations(grid) for seed in seeds]
    path = os.path.join(root, SETTINGS)
    recorded = []
    if os.path.exists(path):
        saved = read_plan(root)
        _refuse_another_recipe(root, saved, recipe, hps, grid)
        grid = {key: saved.grid[key] + [v for v in grid[key] if v not in saved.grid[key]] for key in saved.grid}
        trials = [Trial({key: t.values[key] for key in saved.grid}, t.seed) for t in trials]  # the saved key order
        recorded = saved.recorded
    recorded = recorded + [trial for trial in trials if trial not in recorded]
    atomic_write.make_dir(root, 'root')
    json_files.write_json(path, _settings(recipe, hps, grid, recorded))
    return Plan(root, recipe, hps, grid, trials, recorded)


def _refuse_another_recipe(root, saved, recipe, hps, grid):
    changed = [
        f'{field} {getattr(saved.recipe, field)!r} (now {getattr(recipe, field)!r})'
        for field in (field.name for field in dataclasses.fields(SweepRecipe))
        if getattr(saved.recipe, field) != getattr(recipe, field)
    ]
    changed += [
        f'hparams.{key} {json.dumps(old)} (now {json.dumps(new)})'
        for key, old, new in zip(hps._fields, saved.hparams, hps, strict=True)
        if old != new
    ]
    if set(saved.grid) != set(grid):
        changed.append(f'grid keys {", ".join(saved.grid) or "none"} (now {", ".join(grid) or "none"})')
    if changed:
        raise UserError(f'{root} holds a sweep of another recipe: {"; ".join(changed)}; use another root', 'root')


def read_plan(root):
    """The sweep ROOT/sweep.json records, checked: one line naming the file and key if it is damaged.
    A sweep.json of seeds alone, from before grids, lists no trials: they are its seed_N folders."""
    path = os.path.join(root, SETTINGS)
    way_out = f'restore it, or use another root (the run folders below {root} are kept)'
    try:
        saved = json_files.read_json(path, way_out, key='root')
    except FileNotFoundError:
        raise UserError(f'no {path}: {root} holds no sweep', 'root') from None

    def refuse(key, expected):
        got = json.dumps(saved[key]) if key in saved else 'nothing'
        raise UserError(f'{path}: {key}: expected {expected}, got {got}; {way_out}', 'root')

    values = {}
    for field in dataclasses.fields(SweepRecipe):
        value = saved.get(field.name, field.default)
        if field.type is int and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            refuse(field.name, 'an integer >= 0')
        if field.type is not int and not isinstance(value, str):
            refuse(field.name, 'a string')
        values[field.name] = value
    recipe = SweepRecipe(**values)
    try:
        hps = make_hparams({key[len('hparams.') :]: v for key, v in saved.items() if key.startswith('hparams.')})
    except UserError as e:
        raise UserError(f'{path}: {e.message}; {way_out}', 'root') from None
    grid = saved.get('grid', {})
    if not isinstance(grid, dict):
        refuse('grid', 'an object of hparam names to lists of values')
    try:
        grid = checked_grid(grid, None)
    except UserError as e:
        raise UserError(f'{path}: grid: {e.message}; {way_out}', 'root') from None
    if 'trials' not in saved:
        seeds = sorted(int(m[1]) for m in map(re.compile(r'seed_(\d+)').fullmatch, _listdir(root)) if m)
        return Plan(root, recipe, hps, grid, [], [Trial({}, seed) for seed in seeds])
    trials = saved['trials']
    expected = f'a list of {{"folder", "seed", "values"}} objects with values for {", ".join(grid) or "no key"}'
    if not isinstance(trials, list) or not all(_is_trial(item, grid) for item in trials):
        refuse('trials', expected)
    recorded = [Trial(item['values'], item['seed']) for item in trials]
    if any(trial.name != item['folder'] for trial, item in zip(recorded, trials, strict=True)):
        refuse('trials', expected + ', each in the folder its values name')
    return Plan(root, recipe, hps, grid, [], recorded)


def _is_trial(item, grid):
    return (
        isinstance(item, dict)
        and isinstance(item.get('folder'), str)
        and isinstance(item.get('seed'), int)
        and not isinstance(item.get('seed'), bool)
        and item['seed'] >= 0
        and isinstance(item.get('values'), dict)
        and list(item['values']) == list(grid)
    )


def _listdir(root):
    return os.listdir(root) if os.path.isdir(root) else []


def trainer_args(plan, trial):
    """resnet_main.py's flags that train (or resume) the trial, measured on the test split, or on the
    validation split with every checkpoint kept, so that the one best on validation can be measured."""
    recipe = plan.recipe
    override = ','.join(
        [recipe.hparams_override] * bool(recipe.hparams_override)
        + [f'{key}={override_text(value)}' for key, value in trial.values.items()]
    )
    args = {
        'mode': 'train_and_eval',
        'log_root': plan.folder(trial),
        'seed': trial.seed,
        **dataclasses.asdict(recipe),
        'hparams_override': override,
    }
    if recipe.validation_size:  # each eval's, each CHECKPOINT_EVERY, the last, a few on stops
        steps, every = plan.trial_hparams(trial).train_steps, recipe.eval_every_steps
        saves = {steps, *range(CHECKPOINT_EVERY, steps + 1, CHECKPOINT_EVERY), *range(every, steps + 1, every)}
        args.update(eval_split='validation', keep_checkpoints=len(saves) + 10)
    return [f'--{key}={value}' for key, value in args.items()]
