"""HParams: the fields, their defaults (the 2016 recipe), and HParams made from values a user gave
(a preset, an override, a saved run): each value's type checked against the default's, each range
checked, a refusal naming the key. Pure Python, so a mistake is refused before TensorFlow starts."""

import collections

from resnet_cifar.errors import UserError

HParams = collections.namedtuple(
    'HParams',
    [
        # The original's nine fields.
        'batch_size',  # global batch, split across replicas
        'num_classes',
        'min_lrn_rate',  # the schedule never goes below this
        'lrn_rate',  # initial learning rate
        'num_residual_units',  # per stage
        'use_bottleneck',
        'weight_decay_rate',  # times the L2 loss of conv and dense kernels
        'relu_leakiness',
        'optimizer',  # 'mom', 'sgd', 'nesterov' or 'muon' (Muon for conv kernels, Nesterov SGD for the rest)
        # What the loop needs.
        'filters',  # [stem, stage 1, stage 2, stage 3] output widths
        'lr_boundaries',  # steps at which the learning rate is divided by 10
        'train_steps',  # training stops here
        'momentum',
        'bn_decay',  # batch-norm moving-average decay
        'bn_epsilon',
        'warmup_steps',  # linear warm-up from 0 to lrn_rate; 0 turns it off
        # Newer recipes (recipe.py); the defaults are the 2016 recipe.
        'lr_schedule',  # 'piecewise' (lr_boundaries), 'cosine' or 'triangular' (to min_lrn_rate at train_steps)
        'label_smoothing',  # share of each target spread over all classes
        'ema_decay',  # average of the weights used by eval, predict and export; 0: off
        'cutout',  # side of a square zeroed in each training image; 0: off
        'flip_tta',  # eval, predict and export average the logits of each image and its mirror
        # The speed-run tricks (airbench94; docs/fast.md); the defaults are off.
        'network',  # 'resnet' (the pre-activation ResNet) or 'airbench' (resnet_cifar/fast_network.py)
        'whiten',  # a frozen 2x2 whitening conv first, from the run's own training images
        'whiten_bias_steps',  # the whitening conv's bias trains this many steps, then is frozen; 0: throughout
        'dirac_init',  # every conv starts as the identity on its first channels
        'bn_scale',  # batch norm multiplies by a trained scale; false: only the offset trains
        'bn_bias_lr',  # the batch-norm offsets' learning rate, as a multiple of the others'
        'decoupled',  # lrn_rate and weight_decay_rate per 1024 examples, independent of batch and momentum
        'warmup_from',  # the warm-up starts at this fraction of lrn_rate
        'lookahead_every',  # every this many steps a weight average moves and is copied into the weights; 0: off
        'lookahead_start',  # the first step of the lookahead average
        'lookahead_decay',  # its decay per step, raised over training by (step / train_steps) ** 3
        'alternating_flip',  # a random flip per image in epoch 0, then all images mirrored every other epoch
        'translate',  # training images move up to this many pixels each way (the 2016 pad-and-crop: 4)
        'reflect_pad',  # the translation fills in with the reflected image instead of zeros
        'translate_tta',  # eval, predict and export average the logits of the image moved one pixel each way
        'logit_scale',  # the logits are multiplied by this
        # Muon (optimizer 'muon', airbench94_muon; resnet_cifar/muon.py).
        'muon_lrn_rate',  # the conv kernels' rate, on the schedule of lrn_rate
        'muon_momentum',  # their Nesterov momentum
        # Evals within training (resnet_cifar/evaluation.py).
        'intermediate_tta',  # false: evals before train_steps take one view per image; the last, the TTA asked
    ],
)

DEFAULT_HPARAMS = HParams(
    batch_size=128,
    num_classes=10,
    min_lrn_rate=0.0001,
    lrn_rate=0.1,
    num_residual_units=5,
    use_bottleneck=False,
    weight_decay_rate=0.0002,
    relu_leakiness=0.1,
    optimizer='mom',
    filters=[16, 16, 32, 64],
    lr_boundaries=[40000, 60000, 80000],
    train_steps=80000,
    momentum=0.9,
    bn_decay=0.9,
    bn_epsilon=0.001,
    warmup_steps=0,
    lr_schedule='piecewise',
    label_smoothing=0.0,
    ema_decay=0.0,
    cutout=0,
    flip_tta=False,
    network='resnet',
    whiten=False,
    whiten_bias_steps=0,
    dirac_init=False,
    bn_scale=True,
    bn_bias_lr=1.0,
    decoupled=False,
    warmup_from=0.0,
    lookahead_every=0,
    lookahead_start=0,
    lookahead_decay=0.95,
    alternating_flip=False,
    translate=4,
    reflect_pad=False,
    translate_tta=False,
    logit_scale=1.0,
    muon_lrn_rate=0.24,
    muon_momentum=0.6,
    intermediate_tta=True,
)

MAX_STEPS = 2**31 - 1  # far more steps than any run takes: a larger train_steps is a typo


class HParamsError(UserError):
    """A preset, override or value the user gave is not usable; the message says which."""


def make_hparams(values, source=None, ranges=True):
    """HParams from DEFAULT_HPARAMS updated by `values`, a dict. A refusal names `source`, the
    setting or file the values came from, then the key: `hparams_override: train_steps: expected
    an integer, got 'ten'`. ranges=False checks the keys and types only (the ranges depend on the
    other values): what the command line refuses before TensorFlow starts."""
    defaults = DEFAULT_HPARAMS._asdict()
    fields = dict(defaults)
    try:
        for key, value in values.items():
            if key not in fields:
                raise HParamsError(f'unknown hparam {key!r}; known: {", ".join(HParams._fields)}')
            fields[key] = _coerce(key, value, defaults[key])
        return validate(HParams(**fields)) if ranges else HParams(**fields)
    except HParamsError as e:
        if source is None:
            raise
        raise HParamsError(e.message.removeprefix('hparam '), key=source) from None


def _coerce(key, value, default):
    """Checks a value's type against the default's; ints are accepted for floats."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = {bool: 'true or false', int: 'an integer', float: 'a number', list: 'a list of integers'}
        raise HParamsError(f'hparam {key}: expected {expected.get(type(default), "a string")}, got {value!r}')
    return value


def _check(condition, key, expected, value):
    if not condition:
        raise HParamsError(f'hparam {key}: expected {expected}, got {value!r}')


def validate(hps):
    """Rejects values no run could use, naming the key; returns `hps`."""
    _check(hps.batch_size > 0, 'batch_size', 'a positive integer', hps.batch_size)
    _check(hps.num_classes > 1, 'num_classes', 'at least 2', hps.num_classes)
    _check(hps.lrn_rate > 0, 'lrn_rate', 'a positive number', hps.lrn_rate)
    lr_range = f'between 0 and lrn_rate ({hps.lrn_rate})'
    _check(0 <= hps.min_lrn_rate <= hps.lrn_rate, 'min_lrn_rate', lr_range, hps.min_lrn_rate)
    _check(hps.num_residual_units > 0, 'num_residual_units', 'a positive integer', hps.num_residual_units)
    _check(hps.weight_decay_rate >= 0, 'weight_decay_rate', 'a number >= 0', hps.weight_decay_rate)
    _check(0 <= hps.relu_leakiness < 1, 'relu_leakiness', 'a number in [0, 1)', hps.relu_leakiness)
    optimizers = "'mom', 'sgd', 'nesterov' or 'muon'"
    _check(hps.optimizer in ('mom', 'sgd', 'nesterov', 'muon'), 'optimizer', optimizers, hps.optimizer)
    _check(hps.muon_lrn_rate > 0, 'muon_lrn_rate', 'a positive number', hps.muon_lrn_rate)
    _check(0 <= hps.muon_momentum < 1, 'muon_momentum', 'a number in [0, 1)', hps.muon_momentum)
    _check(len(hps.filters) == 4 and all(f > 0 for f in hps.filters), 'filters', 'four positive widths', hps.filters)
    if hps.use_bottleneck:
        _check(
            all(f % 4 == 0 for f in hps.filters[1:]),
            'filters',
            'stage widths divisible by 4 for bottleneck units',
            hps.filters,
        )
    boundaries = hps.lr_boundaries
    _check(
        all(b > 0 for b in boundaries) and all(a < b for a, b in zip(boundaries, boundaries[1:], strict=False)),
        'lr_boundaries',
        'strictly increasing positive steps',
        boundaries,
    )
    _check(0 < hps.train_steps <= MAX_STEPS, 'train_steps', f'a positive integer up to {MAX_STEPS}', hps.train_steps)
    _check(0 <= hps.momentum < 1, 'momentum', 'a number in [0, 1)', hps.momentum)
    _check(0 < hps.bn_decay < 1, 'bn_decay', 'a number in (0, 1)', hps.bn_decay)
    _check(hps.bn_epsilon > 0, 'bn_epsilon', 'a positive number', hps.bn_epsilon)
    _check(hps.warmup_steps >= 0, 'warmup_steps', 'an integer >= 0', hps.warmup_steps)
    schedules = ('piecewise', 'cosine', 'triangular')
    _check(hps.lr_schedule in schedules, 'lr_schedule', "'piecewise', 'cosine' or 'triangular'", hps.lr_schedule)
    if hps.lr_schedule in ('cosine', 'triangular'):
        _check(hps.warmup_steps < hps.train_steps, 'warmup_steps', 'fewer than train_steps', hps.warmup_steps)
    _check(0 <= hps.label_smoothing < 1, 'label_smoothing', 'a number in [0, 1)', hps.label_smoothing)
    _check(0 <= hps.ema_decay < 1, 'ema_decay', 'a number in [0, 1); 0 turns it off', hps.ema_decay)
    _check(0 <= hps.cutout < 32, 'cutout', 'a side in pixels in [0, 32); 0 turns it off', hps.cutout)
    _validate_fast(hps)
    return hps


WHITEN_WIDTH = 24  # the whitening stem's (fast_network): each eigenvector of 2x2x3 patches, and its negative


def _validate_fast(hps):
    """The speed-run switches' rules (docs/fast.md)."""
    _check(hps.network in ('resnet', 'airbench'), 'network', "'resnet' or 'airbench'", hps.network)
    if hps.network == 'airbench':
        _check(not hps.use_bottleneck, 'use_bottleneck', "false for network 'airbench'", hps.use_bottleneck)
        _check(hps.num_residual_units == 1, 'num_residual_units', "1 for network 'airbench'", hps.num_residual_units)
        if hps.whiten:
            stem = f'a stem width of {WHITEN_WIDTH} with whiten'
            _check(hps.filters[0] == WHITEN_WIDTH, 'filters', stem, hps.filters)
    steps = 'an integer >= 0; 0: it trains throughout'
    _check(hps.whiten_bias_steps >= 0, 'whiten_bias_steps', steps, hps.whiten_bias_steps)
    _check(hps.bn_bias_lr > 0, 'bn_bias_lr', 'a positive number; 1: the same rate as the others', hps.bn_bias_lr)
    _check(0 <= hps.warmup_from < 1, 'warmup_from', 'a fraction of lrn_rate in [0, 1)', hps.warmup_from)
    _check(hps.lookahead_every >= 0, 'lookahead_every', 'an integer >= 0; 0 turns it off', hps.lookahead_every)
    _check(hps.lookahead_start >= 0, 'lookahead_start', 'a step >= 0', hps.lookahead_start)
    _check(0 <= hps.lookahead_decay < 1, 'lookahead_decay', 'a number in [0, 1)', hps.lookahead_decay)
    _check(0 <= hps.translate <= 16, 'translate', 'pixels in [0, 16]', hps.translate)
    _check(hps.logit_scale > 0, 'logit_scale', 'a positive number; 1: unchanged', hps.logit_scale)
