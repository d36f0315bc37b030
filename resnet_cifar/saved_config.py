"""A run's saved configuration read back strictly: hparams.json, or the copy every checkpoint
carries. Every key must be there and every value is checked with the rules the flags and
overrides follow (run_config, hparams_check), so nothing is completed silently.

Run folders of earlier versions hold fewer hparams: a key that a version added is given its
default (the behaviour before it existed) only when the file holds none of that version's keys.
A file holding some of them lost the others, and is refused.
"""

import dataclasses

from resnet_cifar import run_config
from resnet_cifar.errors import UserError
from resnet_model import HParams

TOP_KEYS = ('dataset', 'preset', 'hparams', 'data')
# The hparams each version of hparams.json added, oldest first.
HPARAMS_ADDED = (
    (
        'batch_size',
        'num_classes',
        'min_lrn_rate',
        'lrn_rate',
        'num_residual_units',
        'use_bottleneck',
        'weight_decay_rate',
        'relu_leakiness',
        'optimizer',
        'filters',
        'lr_boundaries',
        'train_steps',
        'momentum',
        'bn_decay',
        'bn_epsilon',
        'warmup_steps',
    ),
    ('lr_schedule', 'label_smoothing', 'ema_decay', 'cutout', 'flip_tta'),  # the recipe switches
    (  # the speed-run switches (docs/fast.md)
        'network',
        'whiten',
        'whiten_bias_steps',
        'dirac_init',
        'bn_scale',
        'bn_bias_lr',
        'decoupled',
        'warmup_from',
        'lookahead_every',
        'lookahead_start',
        'lookahead_decay',
        'alternating_flip',
        'translate',
        'reflect_pad',
        'translate_tta',
        'logit_scale',
    ),
    ('muon_lrn_rate', 'muon_momentum', 'intermediate_tta'),  # optimizer 'muon'; one-view evals in training
)
# Every DataSettings field has been saved since the first version.
DATA_KEYS = tuple(field.name for field in dataclasses.fields(run_config.DataSettings))


def hparams_expected(saved_hparams):
    """The hparam keys a saved `hparams` object must hold: those of every version up to the newest
    one it holds a key of."""
    newest = max((i for i, added in enumerate(HPARAMS_ADDED) if set(added) & set(saved_hparams)), default=0)
    return [key for added in HPARAMS_ADDED[: newest + 1] for key in added]


def parse(saved, log_root, source, way_out):
    """The RunConfig that `saved` (a JSON value read from `source`, a file or a checkpoint) holds;
    anything missing or wrong raises a UserError naming `source` and the key, ending in `way_out`."""

    def refuse(problem):
        raise UserError(f'{source}: {problem}; {way_out}', mentions=['log_root'])

    if not isinstance(saved, dict):
        refuse(f'expected a JSON object with {", ".join(TOP_KEYS)}, got {type(saved).__name__}')
    _check_keys(saved, TOP_KEYS, '', refuse)
    for key in ('hparams', 'data'):
        if not isinstance(saved[key], dict):
            refuse(f'{key}: expected a JSON object, got {saved[key]!r:.60}')
    _check_keys(saved['hparams'], hparams_expected(saved['hparams']), 'hparams.', refuse, known=HParams._fields)
    _check_keys(saved['data'], DATA_KEYS, 'data.', refuse)
    for key in ('dataset', 'preset'):
        if not isinstance(saved[key], str) or not saved[key]:
            refuse(f'{key}: expected a name, got {saved[key]!r:.60}')
    try:
        return run_config.from_json(saved, log_root, source)
    except UserError as e:  # a data setting's error names it by its field: say where it is
        refuse(f'data.{e.line()}' if e.key in DATA_KEYS else e.line())


def _check_keys(values, expected, prefix, refuse, known=None):
    missing = [key for key in expected if key not in values]
    if missing:
        refuse(f'{prefix}{missing[0]} is missing')
    unknown = [key for key in values if key not in (known or expected)]
    if unknown:
        refuse(f'{prefix}{unknown[0]} is not a key of a run configuration')
