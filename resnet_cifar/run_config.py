"""The run configuration: one immutable value, built once and passed to training, evaluation and
prediction.

It holds what the run is (the dataset, the preset's name, its HParams, where the images come
from), which LOG_ROOT/hparams.json and every checkpoint save, and how this invocation runs it
(folders, every-N counts, eval settings), which is not saved. The hparams come from presets.py.

    config = run_config.new_run('runs/r20', overrides={'num_residual_units': 3}, data_dir='data')
"""

import dataclasses
import json
import os

from resnet_cifar import startup
from resnet_cifar.choices import (
    DATA_SOURCES,
    DTYPE_POLICIES,
    EVAL_SPLITS,
    INPUT_PATHS,
)
from resnet_cifar.datasets import CLASS_NAMES, DATASETS, data_patterns, num_classes_of
from resnet_cifar.errors import UserError
from resnet_cifar.hparams_check import make_hparams
from resnet_cifar.hparams_schema import DEFAULT_HPARAMS, MAX_BATCH, MAX_STEPS, HParams, architecture
from resnet_cifar.presets import build_hparams, load_preset


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

    def __post_init__(self):
        """The flags' rules, for values from Python and from a saved run as well."""
        if self.data_source not in DATA_SOURCES:
            raise UserError(f'expected one of {", ".join(DATA_SOURCES)}, got {self.data_source!r}', 'data_source')
        for name in ('train_data_path', 'eval_data_path', 'tfds_data_dir'):
            if not isinstance(getattr(self, name), str | None):
                raise UserError(f'expected a path, got {getattr(self, name)!r}', name)
        if not _is_int(self.validation_size) or self.validation_size < 0:
            raise UserError(f'expected an integer >= 0, got {self.validation_size!r}', 'validation_size')
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise UserError(f'expected an integer from 0 to {2**32 - 1}, got {self.seed!r}', 'seed')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run and how this invocation runs it. Change a copy with dataclasses.replace."""

    log_root: str  # the run's folder: hparams.json, checkpoints, summaries
    dataset: str = 'cifar10'
    preset: str = 'resnet32'  # the name the hparams came from, for logs and messages
    hparams: HParams = DEFAULT_HPARAMS
    data: DataSettings = DataSettings()
    # The compute dtype it trains in (default: setup()'s); None: unknown, in a run of an earlier version.
    dtype: str | None = dataclasses.field(default_factory=startup.current_dtype)
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
    input: str = 'auto'  # training batches: tf_data, device, or auto (device_input.choose)
    steps_per_call: int = 10  # the most training steps in one call of the compiled loop
    sync_batch_norm: bool = False  # batch-norm statistics over the global batch

    def __post_init__(self):
        num_classes_of(self.dataset, self.hparams.num_classes)
        if self.dtype is not None and self.dtype not in DTYPE_POLICIES:
            raise UserError(f'expected one of {", ".join(DTYPE_POLICIES)}, got {self.dtype!r}', 'dtype')
        if self.eval_split not in EVAL_SPLITS:
            raise UserError(f'expected test or validation, got {self.eval_split!r}', 'eval_split')
        if self.input not in INPUT_PATHS:
            raise UserError(f'expected one of {", ".join(INPUT_PATHS)}, got {self.input!r}', 'input')
        counts = {
            name: MAX_STEPS
            for name in ('checkpoint_every_steps', 'summary_every_steps', 'eval_every_steps', 'steps_per_call')
        }
        for name, most in {**counts, 'keep_checkpoints': MAX_STEPS, 'eval_batch_size': MAX_BATCH}.items():
            if not _is_int(getattr(self, name)) or not 0 < getattr(self, name) <= most:
                raise UserError(f'expected a positive integer up to {most}, got {getattr(self, name)!r}', name)

    @property
    def train_folder(self):
        """Where training summaries go: train_dir, or LOG_ROOT/train."""
        return self.train_dir or os.path.join(self.log_root, 'train')

    @property
    def eval_folder(self):
        """Where eval summaries and metrics.json go: eval_dir, or LOG_ROOT/eval."""
        return self.eval_dir or os.path.join(self.log_root, 'eval')

    @property
    def num_classes(self):
        return DATASETS[self.dataset].num_classes

    @property
    def class_names(self):
        return CLASS_NAMES[self.dataset]

    def network(self):
        """What decides the variables: a checkpoint fits only a run whose network() is equal."""
        return self.dataset, architecture(self.hparams)

    def origin(self):
        """Where the network comes from, as the start-up line names it: 'preset resnet32', with the
        keys of the network that differ from the preset's ('preset resnet32 with num_residual_units=1')."""
        try:
            preset = load_preset(self.preset)._replace(num_classes=self.hparams.num_classes)
        except UserError:  # a preset file gone since: the name alone
            return f'preset {self.preset}'
        ours, its = architecture(self.hparams), architecture(preset)
        changed = ', '.join(f'{key}={json.dumps(value)}' for key, value in ours.items() if its[key] != value)
        return f'preset {self.preset}' + (f' with {changed}' if changed else '')

    def describe(self):
        settings = ', '.join(f'{k}={json.dumps(v)}' for k, v in architecture(self.hparams).items())
        return f'preset {self.preset} on {self.dataset} ({settings})'

    def to_json(self):
        """What the run is, as hparams.json and the checkpoints hold it."""
        saved = {
            'dataset': self.dataset,
            'preset': self.preset,
            'hparams': self.hparams._asdict(),
            'data': dataclasses.asdict(self.data),
        }
        return saved if self.dtype is None else {**saved, 'dtype': self.dtype}


def from_json(saved, log_root, source):
    """The RunConfig of a saved run, with this invocation's options at their defaults; `source`
    names the file or checkpoint it was read from, for errors."""
    data_fields = {field.name for field in dataclasses.fields(DataSettings)}
    return RunConfig(
        log_root=log_root,
        dataset=saved['dataset'],
        preset=saved['preset'],
        hparams=make_hparams(saved['hparams'], source=source),
        data=DataSettings(**{k: v for k, v in saved['data'].items() if k in data_fields}),
        dtype=saved.get('dtype'),
    )


def data_settings(dataset, data_dir=None, **settings):
    """DataSettings whose file patterns follow from `data_dir` (see datasets.data_patterns),
    unless `settings` gives them."""
    if data_dir:
        train_pattern, eval_pattern = data_patterns(dataset, data_dir)
        settings['train_data_path'] = settings.get('train_data_path') or train_pattern
        settings['eval_data_path'] = settings.get('eval_data_path') or eval_pattern
    return DataSettings(**settings)


def new_run(log_root, preset='resnet32', dataset='cifar10', overrides=None, data_dir=None, data=None, **options):
    """The configuration of a new run: a preset (name or JSON file) with `overrides`, images from
    `data_dir` or `data` (DataSettings), and this invocation's `options` (RunConfig's fields)."""
    hps = build_hparams(preset, overrides, dataset)
    data = data or data_settings(dataset, data_dir)
    return RunConfig(log_root=log_root, dataset=dataset, preset=preset, hparams=hps, data=data, **options)
