"""The run configuration: one immutable value, built once and passed to training, evaluation and
prediction.

It holds what the run is (the dataset, the preset's name, its HParams, where the images come
from), which LOG_ROOT/hparams.json and every checkpoint save, and how this invocation runs it
(folders, every-N counts, eval settings), which is not saved. Presets and `hparams_override`
texts are read here too.

    config = run_config.new_run('runs/r20', overrides={'num_residual_units': 3}, data_dir='data')
"""

import dataclasses
import importlib.util
import json
import os

import cifar_input
import resnet_model
from resnet_cifar.errors import UserError
from resnet_model import HParamsError


def _presets_dir():
    """hparams/: installed as resnet_cifar.hparams, or beside the package in a checkout."""
    spec = importlib.util.find_spec('resnet_cifar.hparams')
    installed = [path for path in (spec.submodule_search_locations if spec else ()) if os.path.isdir(path)]
    return installed[0] if installed else os.path.join(os.path.dirname(os.path.dirname(__file__)), 'hparams')


PRESETS_DIR = _presets_dir()
EVAL_SPLITS = ('test', 'validation')


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where a run's images come from (cifar_input.load_split's arguments). Saved with the run, so
    a resume trains on the same images and an eval measures the same split."""

    data_source: str = 'binary'  # binary, tfds or synthetic
    train_data_path: str | None = None  # file pattern of the training batch files
    eval_data_path: str | None = None  # file pattern of the test batch files
    tfds_data_dir: str | None = None
    validation_size: int = 0  # the last N training images are the validation split
    seed: int = 0  # weight initialization, data order and augmentation


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run and how this invocation runs it. Change a copy with dataclasses.replace."""

    log_root: str  # the run's folder: hparams.json, checkpoints, summaries
    dataset: str = 'cifar10'
    preset: str = 'resnet32'  # the name the hparams came from, for logs and messages
    hparams: resnet_model.HParams = resnet_model.DEFAULT_HPARAMS
    data: DataSettings = DataSettings()
    # This invocation's options; not saved with the run.
    train_dir: str | None = None  # training summaries; None: LOG_ROOT/train
    eval_dir: str | None = None  # eval summaries and metrics.json; None: LOG_ROOT/eval
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 5
    summary_every_steps: int = 100
    eval_every_steps: int = 1000  # when training evaluates too
    eval_batch_size: int = 100
    eval_split: str = 'test'  # or 'validation'
    eval_once: bool = False  # evaluate what is there, then stop, instead of waiting for new checkpoints
    eval_timeout_secs: int = 600
    jit_compile: bool = False  # XLA for the train and eval steps
    sync_batch_norm: bool = False  # batch-norm statistics over the global batch

    def __post_init__(self):
        if self.dataset not in cifar_input.DATASETS:
            raise UserError(f'expected one of {", ".join(cifar_input.DATASETS)}, got {self.dataset!r}', 'dataset')
        if self.hparams.num_classes != self.num_classes:
            raise HParamsError(
                f'hparam num_classes: follows dataset ({self.dataset}: {self.num_classes})', mentions=['dataset']
            )
        if self.eval_split not in EVAL_SPLITS:
            raise UserError(f'expected test or validation, got {self.eval_split!r}', 'eval_split')
        for name in ('checkpoint_every_steps', 'keep_checkpoints', 'summary_every_steps', 'eval_every_steps'):
            if getattr(self, name) < 1:
                raise UserError(f'expected a positive integer, got {getattr(self, name)!r}', name)
        object.__setattr__(self, 'train_dir', self.train_dir or os.path.join(self.log_root, 'train'))
        object.__setattr__(self, 'eval_dir', self.eval_dir or os.path.join(self.log_root, 'eval'))

    @property
    def num_classes(self):
        return cifar_input.DATASETS[self.dataset].num_classes

    @property
    def class_names(self):
        return cifar_input.CLASS_NAMES[self.dataset]

    def network(self):
        """What decides the variables: a checkpoint fits only a run whose network() is equal."""
        return self.dataset, resnet_model.architecture(self.hparams)

    def describe(self):
        settings = ', '.join(f'{k}={json.dumps(v)}' for k, v in resnet_model.architecture(self.hparams).items())
        return f'preset {self.preset} on {self.dataset} ({settings})'

    def to_json(self):
        """What the run is, as hparams.json and the checkpoints hold it."""
        return {
            'dataset': self.dataset,
            'preset': self.preset,
            'hparams': self.hparams._asdict(),
            'data': dataclasses.asdict(self.data),
        }


def from_json(saved, log_root, source):
    """The RunConfig of a saved run, with this invocation's options at their defaults; `source`
    names the file or checkpoint it was read from, for errors."""
    data_fields = {field.name for field in dataclasses.fields(DataSettings)}
    return RunConfig(
        log_root=log_root,
        dataset=saved['dataset'],
        preset=saved['preset'],
        hparams=resnet_model.make_hparams(saved['hparams'], source=source),
        data=DataSettings(**{k: v for k, v in saved['data'].items() if k in data_fields}),
    )


def load_split(config, split):
    """The images and labels of 'train', 'validation' or 'test' that the configuration names."""
    data = config.data
    return cifar_input.load_split(
        config.dataset,
        data.data_source,
        split,
        pattern=data.eval_data_path if split == 'test' else data.train_data_path,
        validation_size=data.validation_size,
        tfds_data_dir=data.tfds_data_dir,
        seed=data.seed,
    )


# ---------------------------------------------------------------------------
# HParams from presets and overrides.


def preset_names():
    return sorted(f[: -len('.json')] for f in os.listdir(PRESETS_DIR) if f.endswith('.json'))


def _read_json(path):
    try:
        with open(path) as f:
            values = json.load(f)
    except OSError as e:
        raise HParamsError(f'{path}: cannot read hparams: {e.strerror}') from None
    except json.JSONDecodeError as e:
        raise HParamsError(f'{path}: not valid JSON ({e.msg} at line {e.lineno})') from None
    if not isinstance(values, dict):
        raise HParamsError(f'{path}: expected a JSON object of hparam names to values')
    return values


def load_preset(name_or_path):
    """The preset hparams/NAME.json, or a JSON file of hparam values, over the defaults."""
    if name_or_path.endswith('.json') or os.sep in name_or_path:
        path = name_or_path
        if not os.path.isfile(path):
            raise HParamsError(f'no such file {path}', 'hparams')
    else:
        path = os.path.join(PRESETS_DIR, name_or_path + '.json')
        if not os.path.isfile(path):
            raise HParamsError(f'unknown preset {name_or_path!r}; presets: {", ".join(preset_names())}', 'hparams')
    return resnet_model.make_hparams(_read_json(path), source=path)


def _parse_value(text):
    """An override value: JSON where it parses (numbers, lists, true/false), else a string."""
    lowered = {'true': 'true', 'false': 'false'}.get(text.strip().lower(), text.strip())
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text.strip()


def parse_overrides(text):
    """'a=1,b=[2,3],c=mom' -> {'a': 1, 'b': [2, 3], 'c': 'mom'}; commas inside brackets stay."""
    overrides, depth, item = {}, 0, ''
    for char in (text or '') + ',':
        depth += {'[': 1, ']': -1}.get(char, 0)
        if char == ',' and depth == 0:
            if item.strip():
                key, sep, value = item.partition('=')
                if not sep or not key.strip():
                    raise HParamsError(f'expected key=value, got {item.strip()!r}', 'hparams_override')
                overrides[key.strip()] = _parse_value(value)
            item = ''
        else:
            item += char
    if depth != 0:
        raise HParamsError(f'unbalanced brackets in {text!r}', 'hparams_override')
    return overrides


def override(hps, overrides, dataset):
    """`hps` with `overrides` (a dict) applied; num_classes follows the dataset."""
    num_classes = cifar_input.DATASETS[dataset].num_classes
    if overrides.get('num_classes', num_classes) != num_classes:
        raise HParamsError(f'hparam num_classes: follows dataset ({dataset}: {num_classes})', mentions=['dataset'])
    values = {**hps._asdict(), **overrides, 'num_classes': num_classes}
    return resnet_model.make_hparams(values, source='hparams_override')


def data_settings(dataset, data_dir=None, **settings):
    """DataSettings whose file patterns follow from `data_dir` (see cifar_input.data_patterns),
    unless `settings` gives them."""
    if data_dir:
        train_pattern, eval_pattern = cifar_input.data_patterns(dataset, data_dir)
        settings['train_data_path'] = settings.get('train_data_path') or train_pattern
        settings['eval_data_path'] = settings.get('eval_data_path') or eval_pattern
    return DataSettings(**settings)


def new_run(log_root, preset='resnet32', dataset='cifar10', overrides=None, data_dir=None, data=None, **options):
    """The configuration of a new run: a preset (name or JSON file) with `overrides`, images from
    `data_dir` or `data` (DataSettings), and this invocation's `options` (RunConfig's fields)."""
    hps = override(load_preset(preset), dict(overrides or {}), dataset)
    data = data or data_settings(dataset, data_dir)
    return RunConfig(log_root=log_root, dataset=dataset, preset=preset, hparams=hps, data=data, **options)
