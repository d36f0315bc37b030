"""The hparams, declared once: each key's type, default (the 2016 recipe's), rules, one-line meaning
and the version of hparams.json that added it. HParams and DEFAULT_HPARAMS, the checks of a value a
user gave (hparams_check), the upgrade of an older run's keys (saved_config) and the key table of
docs/presets.md (scripts/hparams_table.py) all come from SCHEMA.

A new hparam is one Key at the end, with a default that keeps every earlier run's behaviour and a
new entry of VERSIONS."""

import collections
import typing

MAX_STEPS = 2**31 - 1  # far more steps than any run takes: a larger train_steps is a typo
# Bounds far above any network of the presets (wrn_28_10's widths, resnet1001's units, fast's batch):
# a larger value is a typo, and would make a network or a checkpoint no machine holds.
MAX_BATCH = 2**16
MAX_UNITS = 1000
MAX_WIDTH = 4096
MAX_BOUNDARIES = 100
# The whitening stem is 24 filters wide (fast_network): each eigenvector of its 2x2x3 patches, and its negative.
WHITEN_WIDTH = 2 * (2 * 2 * 3)

# The versions of hparams.json: what each added. A run folder of an earlier version lacks the keys
# the later ones added; they take their defaults, which are the behaviour before the key existed.
VERSIONS = {
    1: 'the first hparams.json: the original nine and what the loop needs',
    2: 'the recipe switches (recipe.py)',
    3: "the speed-run switches (airbench94's, docs/fast.md)",
    4: "Muon (airbench94_muon's) and evals within training of one view",
}


class Rule(typing.NamedTuple):
    """A condition on `hps` (all the hparams, so a rule can depend on others) and what it expects,
    a text formatted with `hps` (`{hps.lrn_rate}`). A key's first rule is about its value alone;
    any others relate it to other keys, and are checked once every key has passed its first."""

    holds: typing.Callable
    expected: str
    related: tuple = ()  # the other keys the rule depends on, which a user may have changed instead
    doc: str = ''  # the rule in the docs' table, where `expected` quotes values


class Key(typing.NamedTuple):
    name: str
    kind: type  # bool, int, float, str, or list (of integers)
    default: object
    meaning: str
    version: int  # of VERSIONS
    rules: tuple = ()
    shapes_variables: bool = False  # a checkpoint fits only a network that agrees on it


def _rule(holds, expected, related=(), doc=''):
    return (Rule(holds, expected, tuple(related), doc),)


def _positive(name):
    return _rule(lambda h: getattr(h, name) > 0, 'a positive number')


def _at_least_zero(name, expected='an integer >= 0'):
    return _rule(lambda h: getattr(h, name) >= 0, expected)


def _steps(name, expected=f'an integer from 0 to {MAX_STEPS}'):
    return _rule(lambda h: 0 <= getattr(h, name) <= MAX_STEPS, expected)


def _fraction(name, expected='a number in [0, 1)'):
    return _rule(lambda h: 0 <= getattr(h, name) < 1, expected)


def _one_of(name, *choices):
    listed = ', '.join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
    return _rule(lambda h: getattr(h, name) in choices, listed)


def _airbench_only(name, value, expected):
    return _rule(lambda h: h.network != 'airbench' or getattr(h, name) == value, expected, ['network'])


SCHEMA = (
    # The original's nine fields.
    Key(
        'batch_size',
        int,
        128,
        'the global batch, split across replicas',
        1,
        _rule(lambda h: 0 < h.batch_size <= MAX_BATCH, f'a positive integer up to {MAX_BATCH}'),
    ),
    Key(
        'num_classes',
        int,
        10,
        'classes of the data set (follows --dataset)',
        1,
        _rule(lambda h: h.num_classes > 1, 'at least 2'),
        shapes_variables=True,
    ),
    Key(
        'min_lrn_rate',
        float,
        0.0001,
        'the schedule never goes below this',
        1,
        _at_least_zero('min_lrn_rate', 'a number >= 0')
        + _rule(lambda h: h.min_lrn_rate <= h.lrn_rate, 'at most lrn_rate ({hps.lrn_rate})', ['lrn_rate']),
    ),
    Key('lrn_rate', float, 0.1, 'the initial learning rate', 1, _positive('lrn_rate')),
    Key(
        'num_residual_units',
        int,
        5,
        'residual units per stage',
        1,
        _rule(lambda h: 0 < h.num_residual_units <= MAX_UNITS, f'a positive integer up to {MAX_UNITS}')
        + _airbench_only('num_residual_units', 1, "1 for network 'airbench'"),
        shapes_variables=True,
    ),
    Key(
        'use_bottleneck',
        bool,
        False,
        'bottleneck units (1x1, 3x3, 1x1) instead of plain ones',
        1,
        _airbench_only('use_bottleneck', False, "false for network 'airbench'"),
        shapes_variables=True,
    ),
    Key(
        'weight_decay_rate',
        float,
        0.0002,
        'times the L2 loss of the conv and dense kernels',
        1,
        _at_least_zero('weight_decay_rate', 'a number >= 0'),
    ),
    Key('relu_leakiness', float, 0.1, 'the slope of the leaky ReLU below 0', 1, _fraction('relu_leakiness')),
    Key(
        'optimizer',
        str,
        'mom',
        "SGD with momentum ('mom', the original's), plain ('sgd') or Nesterov's ('nesterov'); 'muon': Muon for "
        'the conv kernels, Nesterov SGD for the rest',
        1,
        _one_of('optimizer', 'mom', 'sgd', 'nesterov', 'muon'),
    ),
    # What the loop needs.
    Key(
        'filters',
        list,
        [16, 16, 32, 64],
        'output widths: [stem, stage 1, stage 2, stage 3]',
        1,
        _rule(
            lambda h: len(h.filters) == 4 and all(0 < f <= MAX_WIDTH for f in h.filters),
            f'four widths from 1 to {MAX_WIDTH}',
        )
        + _rule(
            lambda h: not h.use_bottleneck or all(f % 4 == 0 for f in h.filters[1:]),
            'stage widths divisible by 4 for bottleneck units',
            ['use_bottleneck'],
        )
        + _rule(
            lambda h: h.network != 'airbench' or not h.whiten or h.filters[0] == WHITEN_WIDTH,
            f'a stem width of {WHITEN_WIDTH} with whiten',
            ['whiten', 'network'],
        ),
        shapes_variables=True,
    ),
    Key(
        'lr_boundaries',
        list,
        [40000, 60000, 80000],
        'steps at which the piecewise rate is divided by 10',
        1,
        _rule(
            lambda h: (
                len(h.lr_boundaries) <= MAX_BOUNDARIES
                and all(0 < b <= MAX_STEPS for b in h.lr_boundaries)
                and all(a < b for a, b in zip(h.lr_boundaries, h.lr_boundaries[1:], strict=False))
            ),
            f'up to {MAX_BOUNDARIES} strictly increasing positive steps',
        ),
    ),
    Key(
        'train_steps',
        int,
        80000,
        'training stops at this step',
        1,
        _rule(lambda h: 0 < h.train_steps <= MAX_STEPS, f'a positive integer up to {MAX_STEPS}'),
    ),
    Key('momentum', float, 0.9, "the optimizer's momentum (not with 'sgd')", 1, _fraction('momentum')),
    Key(
        'bn_decay',
        float,
        0.9,
        'the decay of the batch-norm moving averages',
        1,
        _rule(lambda h: 0 < h.bn_decay < 1, 'a number in (0, 1)'),
    ),
    Key('bn_epsilon', float, 0.001, 'added to the batch variance', 1, _positive('bn_epsilon')),
    Key(
        'warmup_steps',
        int,
        0,
        'a linear warm-up of the rate over this many steps; 0: off',
        1,
        _steps('warmup_steps')
        + _rule(
            lambda h: h.lr_schedule not in ('cosine', 'triangular') or h.warmup_steps < h.train_steps,
            'fewer than train_steps ({hps.train_steps}) with lr_schedule {hps.lr_schedule}',
            ['train_steps', 'lr_schedule'],
            'fewer than train_steps with a cosine or triangular lr_schedule',
        ),
    ),
    # The newer recipes (recipe.py).
    Key(
        'lr_schedule',
        str,
        'piecewise',
        "'piecewise' (lr_boundaries), 'cosine' or 'triangular' (down to min_lrn_rate at train_steps)",
        2,
        _one_of('lr_schedule', 'piecewise', 'cosine', 'triangular'),
    ),
    Key(
        'label_smoothing',
        float,
        0.0,
        'the share of each training target spread over all classes',
        2,
        _fraction('label_smoothing'),
    ),
    Key(
        'ema_decay',
        float,
        0.0,
        'an average of the weights that eval, predict and export use; 0: off',
        2,
        _fraction('ema_decay', 'a number in [0, 1); 0 turns it off'),
    ),
    Key(
        'cutout',
        int,
        0,
        'the side of a square zeroed in each training image; 0: off',
        2,
        _rule(lambda h: 0 <= h.cutout < 32, 'a side in pixels in [0, 32); 0 turns it off'),
    ),
    Key('flip_tta', bool, False, 'eval, predict and export average the logits of each image and its mirror', 2),
    # The speed-run switches (docs/fast.md).
    Key(
        'network',
        str,
        'resnet',
        "'resnet' (pre-activation) or 'airbench' (fast_network.py)",
        3,
        _one_of('network', 'resnet', 'airbench'),
        shapes_variables=True,
    ),
    Key(
        'whiten',
        bool,
        False,
        "a frozen 2x2 whitening conv first, from the run's own training images",
        3,
        shapes_variables=True,
    ),
    Key(
        'whiten_bias_steps',
        int,
        0,
        "the whitening conv's bias trains this many steps, then is frozen; 0: throughout",
        3,
        _steps('whiten_bias_steps', f'an integer from 0 to {MAX_STEPS}; 0: it trains throughout'),
    ),
    Key('dirac_init', bool, False, 'every conv starts as the identity on its first channels', 3),
    Key(
        'bn_scale',
        bool,
        True,
        'batch norm multiplies by a trained scale; false: only the offset trains',
        3,
        shapes_variables=True,
    ),
    Key(
        'bn_bias_lr',
        float,
        1.0,
        "the batch-norm offsets' learning rate, as a multiple of the others'",
        3,
        _rule(lambda h: h.bn_bias_lr > 0, 'a positive number; 1: the same rate as the others'),
    ),
    Key(
        'decoupled',
        bool,
        False,
        'lrn_rate and weight_decay_rate per 1024 examples, independent of batch and momentum',
        3,
    ),
    Key(
        'warmup_from',
        float,
        0.0,
        'the warm-up starts at this fraction of lrn_rate',
        3,
        _fraction('warmup_from', 'a fraction of lrn_rate in [0, 1)'),
    ),
    Key(
        'lookahead_every',
        int,
        0,
        'every this many steps a weight average moves and is copied into the weights; 0: off',
        3,
        _steps('lookahead_every', f'an integer from 0 to {MAX_STEPS}; 0 turns it off'),
    ),
    Key(
        'lookahead_start',
        int,
        0,
        'the first step of the lookahead average',
        3,
        _steps('lookahead_start', f'a step from 0 to {MAX_STEPS}'),
    ),
    Key(
        'lookahead_decay',
        float,
        0.95,
        'its decay per step, raised over training by (step / train_steps) ** 3',
        3,
        _fraction('lookahead_decay'),
    ),
    Key(
        'alternating_flip',
        bool,
        False,
        'a random flip per image in epoch 0, then all images mirrored every other epoch',
        3,
    ),
    Key(
        'translate',
        int,
        4,
        'training images move up to this many pixels each way (2016: pad 4 and crop)',
        3,
        _rule(lambda h: 0 <= h.translate <= 16, 'pixels in [0, 16]'),
    ),
    Key('reflect_pad', bool, False, 'the translation fills in with the reflected image instead of zeros', 3),
    Key(
        'translate_tta',
        bool,
        False,
        'eval, predict and export average the logits of the image moved one pixel each way',
        3,
    ),
    Key(
        'logit_scale',
        float,
        1.0,
        'the logits are multiplied by this',
        3,
        _rule(lambda h: h.logit_scale > 0, 'a positive number; 1: unchanged'),
    ),
    # Muon and leaner evals (airbench94_muon; resnet_cifar/muon.py, evaluation.py).
    Key(
        'muon_lrn_rate',
        float,
        0.24,
        "with optimizer 'muon', the conv kernels' rate, on the schedule of lrn_rate",
        4,
        _rule(lambda h: h.muon_lrn_rate > 0, 'a positive number'),
    ),
    Key(
        'muon_momentum',
        float,
        0.6,
        "with optimizer 'muon', the conv kernels' Nesterov momentum",
        4,
        _fraction('muon_momentum'),
    ),
    Key(
        'intermediate_tta',
        bool,
        True,
        'evals before train_steps take the test-time augmentation asked; false: one view per image',
        4,
    ),
)

HParams = collections.namedtuple('HParams', [key.name for key in SCHEMA])
DEFAULT_HPARAMS = HParams(*(key.default for key in SCHEMA))
KEYS = {key.name: key for key in SCHEMA}


def architecture(hps):
    """The hparams that decide the variables: a checkpoint fits only a network that agrees on all."""
    return {key.name: getattr(hps, key.name) for key in SCHEMA if key.shapes_variables}
