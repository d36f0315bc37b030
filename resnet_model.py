"""ResNet model for CIFAR-10/100: the TF-models `research/resnet` network in Keras.

Related papers:
  Identity Mappings in Deep Residual Networks, https://arxiv.org/abs/1603.05027
  Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385
  Wide Residual Networks, https://arxiv.org/abs/1605.07146
"""

import collections
import functools
import sys

import keras
import numpy as np
import tensorflow as tf

from resnet_cifar import recipe
from resnet_cifar.batch_norm import FusedBatchNormalization
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
        'optimizer',  # 'mom', 'sgd' or 'nesterov'
        # What the loop needs.
        'filters',  # [stem, stage 1, stage 2, stage 3] output widths
        'lr_boundaries',  # steps at which the learning rate is divided by 10
        'train_steps',  # training stops here
        'momentum',
        'bn_decay',  # batch-norm moving-average decay
        'bn_epsilon',
        'warmup_steps',  # linear warm-up from 0 to lrn_rate; 0 turns it off
        # Newer recipes (recipe.py); the defaults are the 2016 recipe.
        'lr_schedule',  # 'piecewise' (lr_boundaries) or 'cosine' (to min_lrn_rate at train_steps)
        'label_smoothing',  # share of each target spread over all classes
        'ema_decay',  # average of the weights used by eval, predict and export; 0: off
        'cutout',  # side of a square zeroed in each training image; 0: off
        'flip_tta',  # eval, predict and export average the logits of each image and its mirror
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
)

# Fields that decide the variables: a checkpoint only fits a model that agrees on all of them.
ARCHITECTURE_FIELDS = ('num_classes', 'num_residual_units', 'use_bottleneck', 'filters')


class HParamsError(UserError):
    """A preset, override or value the user gave is not usable; the message says which."""


def _coerce(key, value, default):
    """Checks an override's type against the default's; ints are accepted for floats."""
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
    """Rejects values no run could use, naming the key."""
    _check(hps.batch_size > 0, 'batch_size', 'a positive integer', hps.batch_size)
    _check(hps.num_classes > 1, 'num_classes', 'at least 2', hps.num_classes)
    _check(hps.lrn_rate > 0, 'lrn_rate', 'a positive number', hps.lrn_rate)
    lr_range = f'between 0 and lrn_rate ({hps.lrn_rate})'
    _check(0 <= hps.min_lrn_rate <= hps.lrn_rate, 'min_lrn_rate', lr_range, hps.min_lrn_rate)
    _check(hps.num_residual_units > 0, 'num_residual_units', 'a positive integer', hps.num_residual_units)
    _check(hps.weight_decay_rate >= 0, 'weight_decay_rate', 'a number >= 0', hps.weight_decay_rate)
    _check(0 <= hps.relu_leakiness < 1, 'relu_leakiness', 'a number in [0, 1)', hps.relu_leakiness)
    _check(hps.optimizer in ('mom', 'sgd', 'nesterov'), 'optimizer', "'mom', 'sgd' or 'nesterov'", hps.optimizer)
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
    _check(hps.train_steps > 0, 'train_steps', 'a positive integer', hps.train_steps)
    _check(0 <= hps.momentum < 1, 'momentum', 'a number in [0, 1)', hps.momentum)
    _check(0 < hps.bn_decay < 1, 'bn_decay', 'a number in (0, 1)', hps.bn_decay)
    _check(hps.bn_epsilon > 0, 'bn_epsilon', 'a positive number', hps.bn_epsilon)
    _check(hps.warmup_steps >= 0, 'warmup_steps', 'an integer >= 0', hps.warmup_steps)
    _check(hps.lr_schedule in ('piecewise', 'cosine'), 'lr_schedule', "'piecewise' or 'cosine'", hps.lr_schedule)
    if hps.lr_schedule == 'cosine':
        _check(hps.warmup_steps < hps.train_steps, 'warmup_steps', 'fewer than train_steps', hps.warmup_steps)
    _check(0 <= hps.label_smoothing < 1, 'label_smoothing', 'a number in [0, 1)', hps.label_smoothing)
    _check(0 <= hps.ema_decay < 1, 'ema_decay', 'a number in [0, 1); 0 turns it off', hps.ema_decay)
    _check(0 <= hps.cutout < 32, 'cutout', 'a side in pixels in [0, 32); 0 turns it off', hps.cutout)
    return hps


def make_hparams(values, source=None):
    """HParams from DEFAULT_HPARAMS updated by `values`, a dict; unknown keys are refused, naming
    `source`: the setting or file the values came from."""
    fields = DEFAULT_HPARAMS._asdict()
    for key, value in values.items():
        if key not in fields:
            raise HParamsError(f'unknown hparam {key!r}; known: {", ".join(HParams._fields)}', key=source)
        fields[key] = _coerce(key, value, DEFAULT_HPARAMS._asdict()[key])
    return validate(HParams(**fields))


def architecture(hps):
    return {field: getattr(hps, field) for field in ARCHITECTURE_FIELDS}


def network_name(hps):
    """'ResNet-32', 'ResNet-164 (bottleneck)', 'ResNet-26 (10x wide)': weighted layers, as papers count."""
    widening = hps.filters[1] // (64 if hps.use_bottleneck else 16)
    detail = ', '.join(['bottleneck'] * hps.use_bottleneck + [f'{widening}x wide'] * (widening > 1))
    return f'ResNet-{(9 if hps.use_bottleneck else 6) * hps.num_residual_units + 2}' + (f' ({detail})' * bool(detail))


# ---------------------------------------------------------------------------
# The network, as in the original: pre-activation units, shared BN + ReLU before the first unit.


def _conv(filters, kernel_size, strides, name):
    """Conv without bias, initialized normal with stddev sqrt(2 / (k * k * out)) as the original."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding='same',
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=np.sqrt(2.0 / (kernel_size * kernel_size * filters))),
        name=name,
    )


class ResNet:
    """Builds the Keras model and its compiled training and evaluation steps from HParams.

    The steps run under a tf.distribute strategy: each replica takes its share of the global batch
    and results are summed across replicas, so loss, learning rate and step mean the same on any
    number of devices. Keras' global policy sets the compute dtype; variables and loss stay float32.
    """

    def __init__(self, hps, sync_batch_norm=False):
        self.hps = hps
        self.sync_batch_norm = sync_batch_norm  # batch statistics over the global batch, not each replica's
        self.model = None
        self.averaged_model = None  # with ema_decay: the weight average that eval uses
        self.optimizer = None
        self.global_step = None

    # -- blocks ------------------------------------------------------------

    def _bn_relu(self, x, name):
        hps = self.hps
        batch_norm = (
            functools.partial(keras.layers.BatchNormalization, synchronized=True)
            if self.sync_batch_norm
            else FusedBatchNormalization
        )
        x = batch_norm(momentum=hps.bn_decay, epsilon=hps.bn_epsilon, name=name + '_bn')(x)
        return keras.layers.LeakyReLU(negative_slope=hps.relu_leakiness, name=name + '_relu')(x)

    def _pre_activation(self, x, activate_before_residual, name):
        """BN + ReLU of the unit's input; the shortcut shares it only on the first unit."""
        activated = self._bn_relu(x, name + '_pre')
        return activated, (activated if activate_before_residual else x)

    def _plain_unit(self, x, out_filter, stride, activate_before_residual, name):
        """Two 3x3 convs; the shortcut is average-pooled and zero-padded in channels when widths differ."""
        in_filter = x.shape[-1]
        x, shortcut = self._pre_activation(x, activate_before_residual, name)
        x = _conv(out_filter, 3, stride, name + '_conv1')(x)
        x = self._bn_relu(x, name + '_2')
        x = _conv(out_filter, 3, 1, name + '_conv2')(x)
        if in_filter != out_filter:
            shortcut = keras.layers.AveragePooling2D(stride, stride, padding='valid', name=name + '_pool')(shortcut)
            pad = (out_filter - in_filter) // 2
            shortcut = keras.layers.Lambda(
                lambda t: tf.pad(t, [[0, 0], [0, 0], [0, 0], [pad, out_filter - in_filter - pad]]),
                name=name + '_pad',
            )(shortcut)
        return keras.layers.Add(name=name + '_add')([x, shortcut])

    def _bottleneck_unit(self, x, out_filter, stride, activate_before_residual, name):
        """1x1, 3x3, 1x1 at a quarter of the width; a strided 1x1 projection when widths differ."""
        in_filter = x.shape[-1]
        x, shortcut = self._pre_activation(x, activate_before_residual, name)
        x = _conv(out_filter // 4, 1, stride, name + '_conv1')(x)
        x = self._bn_relu(x, name + '_2')
        x = _conv(out_filter // 4, 3, 1, name + '_conv2')(x)
        x = self._bn_relu(x, name + '_3')
        x = _conv(out_filter, 1, 1, name + '_conv3')(x)
        if in_filter != out_filter:
            shortcut = _conv(out_filter, 1, stride, name + '_project')(shortcut)
        return keras.layers.Add(name=name + '_add')([x, shortcut])

    def _network(self):
        """A new Keras model: standardized 32x32x3 images in, logits out."""
        hps = self.hps
        # Keras walks the functional graph recursively: ResNet-1001 is deeper than Python's default limit.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000 + 60 * 3 * hps.num_residual_units))
        unit = self._bottleneck_unit if hps.use_bottleneck else self._plain_unit
        images = keras.Input(shape=(32, 32, 3), name='images')
        x = _conv(hps.filters[0], 3, 1, 'init_conv')(images)
        for stage, (width, stride) in enumerate(zip(hps.filters[1:], (1, 2, 2), strict=True), start=1):
            for i in range(hps.num_residual_units):
                x = unit(
                    x,
                    width,
                    stride if i == 0 else 1,
                    activate_before_residual=(stage == 1 and i == 0),
                    name=f'unit_{stage}_{i}',
                )
        x = self._bn_relu(x, 'unit_last')
        x = keras.layers.GlobalAveragePooling2D(name='pool')(x)
        logits = keras.layers.Dense(
            hps.num_classes,
            kernel_initializer=keras.initializers.VarianceScaling(1.0, 'fan_in', 'uniform'),
            dtype='float32',  # logits, softmax and loss in float32 under mixed precision
            name='logits',
        )(x)
        return keras.Model(images, logits, name='resnet')

    def build_model(self):
        """The Keras model that trains: standardized 32x32x3 images in, logits out."""
        self.model = self._network()
        return self.model

    # -- training ----------------------------------------------------------

    def _kernels(self):
        """Conv and dense kernels: what weight decay applies to (not biases, not batch norm)."""
        return [
            layer.kernel for layer in self.model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        ]

    def losses(self, logits, labels):
        """Mean softmax cross-entropy on the logits (label-smoothed if asked), and the weight-decay term."""
        xent = recipe.cross_entropy(logits, labels, self.hps.label_smoothing)
        weight_decay = self.hps.weight_decay_rate * tf.add_n([tf.nn.l2_loss(k) for k in self._kernels()])
        return xent, weight_decay

    def build_train_op(self, strategy=None, jit_compile=False):
        """Creates the optimizer, the step counter and, with ema_decay, the averaged model, and
        returns the compiled training step: a batch (images, int labels) in, the scalars cost,
        xent, weight_decay, precision and learning_rate out. Under mixed_float16 the optimizer
        scales the loss, so small gradients survive.
        """
        hps, strategy = self.hps, strategy or tf.distribute.get_strategy()
        with strategy.scope():
            model = self.model if self.model is not None else self.build_model()
            optimizer = recipe.make_optimizer(hps)
            if keras.mixed_precision.global_policy().name == 'mixed_float16':
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
            if hps.ema_decay:
                self.averaged_model = self._network()
                self.averaged_model.set_weights(model.get_weights())
        self.optimizer = optimizer

        @tf.function(jit_compile=jit_compile)
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                xent, weight_decay = self.losses(logits, labels)
                # This replica's part of the global mean; the optimizer sums gradients over replicas.
                batch = tf.cast(tf.size(labels), tf.float32)
                share = batch / tf.distribute.get_replica_context().all_reduce('SUM', batch)
                loss = xent * share + weight_decay / strategy.num_replicas_in_sync
                scaled_loss = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled_loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return {
                'xent': xent * share,
                'weight_decay': weight_decay,
                'correct': _correct(logits, labels),
                'count': tf.size(labels),
            }

        @tf.function
        def train_step(images, labels):
            lr = recipe.learning_rate(hps, self.global_step)
            optimizer.learning_rate.assign(lr)
            results = strategy.run(replica_step, args=(images, labels))
            xent = strategy.reduce('SUM', results['xent'], axis=None)
            weight_decay = strategy.reduce('MEAN', results['weight_decay'], axis=None)
            correct, count = (strategy.reduce('SUM', results[name], axis=None) for name in ('correct', 'count'))
            if self.averaged_model is not None:
                recipe.update_average(self.averaged_model, model, hps.ema_decay, self.global_step)
            self.global_step.assign_add(1)
            return {
                'cost': xent + weight_decay,
                'xent': xent,
                'weight_decay': weight_decay,
                'precision': tf.cast(correct, tf.float32) / tf.cast(count, tf.float32),
                'learning_rate': lr,
            }

        return train_step

    def build_eval_op(self, strategy=None, jit_compile=False):
        """Returns the compiled eval step of the model eval uses (the averaged one, with
        ema_decay). For a batch of any size it gives the summed loss, the count of right
        predictions, the count of images, and the confusion matrix (rows: true labels, columns:
        predictions)."""
        strategy = strategy or tf.distribute.get_strategy()
        if self.model is None:
            with strategy.scope():
                self.build_model()
        model = self.averaged_model if self.averaged_model is not None else self.model
        flip_tta = self.hps.flip_tta

        @tf.function(jit_compile=jit_compile)
        def replica_eval(images, labels):
            logits = recipe.inference_logits(model, images, flip_tta)
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            predictions = tf.argmax(logits, axis=1, output_type=labels.dtype)
            return {
                'loss_sum': tf.reduce_sum(xent),
                'correct': _correct(logits, labels),
                'count': tf.size(labels),
                'confusion': tf.math.confusion_matrix(labels, predictions, self.hps.num_classes, dtype=tf.int64),
            }

        @tf.function
        def eval_step(images, labels):
            results = strategy.run(replica_eval, args=(images, labels))
            return {name: strategy.reduce('SUM', value, axis=None) for name, value in results.items()}

        return eval_step


def _correct(logits, labels):
    """How many of the batch's predictions are right, as an int64 count."""
    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=labels.dtype), labels), tf.int64))


def count_params(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))
