"""ResNet model for CIFAR-10/100: the TF-models `research/resnet` network in Keras.

Related papers:
  Identity Mappings in Deep Residual Networks, https://arxiv.org/abs/1603.05027
  Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385
  Wide Residual Networks, https://arxiv.org/abs/1605.07146
"""

import typing

import keras
import numpy as np
import tensorflow as tf

from resnet_cifar import fast_network, process_settings, recipe
from resnet_cifar.batch_norm import batch_norm_layer
from resnet_cifar.hparams_schema import DEFAULT_HPARAMS as DEFAULT_HPARAMS  # the design card's names
from resnet_cifar.hparams_schema import HParams as HParams
from resnet_cifar.train_state import TrainState


def network_name(hps):
    """'ResNet-32', 'ResNet-164 (bottleneck)', 'ResNet-26 (10x wide)': weighted layers, as papers count."""
    if hps.network == 'airbench':
        return fast_network.network_name(hps)
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


def _batch_norm_relu(hps, sync_batch_norm):
    """The original's batch norm then leaky ReLU, as a block `bn_relu(x, name)`."""
    batch_norm = batch_norm_layer(hps, sync_batch_norm)

    def bn_relu(x, name):
        x = batch_norm(name=name + '_bn')(x)
        return keras.layers.LeakyReLU(negative_slope=hps.relu_leakiness, name=name + '_relu')(x)

    return bn_relu


def _pool_and_pad(shortcut, stride, width, name):
    """The plain unit's shortcut to a new width: average-pooled, zero-padded in channels on both sides."""
    in_width = shortcut.shape[-1]
    shortcut = keras.layers.AveragePooling2D(stride, stride, padding='valid', name=name + '_pool')(shortcut)
    pad = (width - in_width) // 2
    return keras.layers.Lambda(
        lambda t: tf.pad(t, [[0, 0], [0, 0], [0, 0], [pad, width - in_width - pad]]), name=name + '_pad'
    )(shortcut)


def plain_unit(x, width, stride, bn_relu, activate_before_residual, name):
    """Two 3x3 convs after BN + ReLU of the input, which the shortcut shares only on the first unit."""
    activated = bn_relu(x, name + '_pre')
    shortcut = activated if activate_before_residual else x
    y = _conv(width, 3, stride, name + '_conv1')(activated)
    y = bn_relu(y, name + '_2')
    y = _conv(width, 3, 1, name + '_conv2')(y)
    if x.shape[-1] != width:
        shortcut = _pool_and_pad(shortcut, stride, width, name)
    return keras.layers.Add(name=name + '_add')([y, shortcut])


def bottleneck_unit(x, width, stride, bn_relu, activate_before_residual, name):
    """1x1, 3x3, 1x1 at a quarter of the width; a strided 1x1 projection when widths differ."""
    activated = bn_relu(x, name + '_pre')
    shortcut = activated if activate_before_residual else x
    y = _conv(width // 4, 1, stride, name + '_conv1')(activated)
    y = bn_relu(y, name + '_2')
    y = _conv(width // 4, 3, 1, name + '_conv2')(y)
    y = bn_relu(y, name + '_3')
    y = _conv(width, 1, 1, name + '_conv3')(y)
    if x.shape[-1] != width:
        shortcut = _conv(width, 1, stride, name + '_project')(shortcut)
    return keras.layers.Add(name=name + '_add')([y, shortcut])


def _stage(x, unit, bn_relu, stage, width, stride, num_units):
    """num_units residual units of one width; the first one strides."""
    for i in range(num_units):
        first = i == 0
        x = unit(x, width, stride if first else 1, bn_relu, stage == 1 and first, name=f'unit_{stage}_{i}')
    return x


def network(hps, sync_batch_norm=False):
    """A new Keras model: standardized 32x32x3 images in, logits out; the network hps.network names."""
    if hps.network == 'airbench':
        return fast_network.network(hps, sync_batch_norm)
    # Keras walks the functional graph recursively while it builds it: ResNet-1001 is deeper than
    # Python's default limit.
    with process_settings.recursion_limit(3000 + 60 * 3 * hps.num_residual_units):
        return _resnet(hps, sync_batch_norm)


def _resnet(hps, sync_batch_norm):
    bn_relu = _batch_norm_relu(hps, sync_batch_norm)
    unit = bottleneck_unit if hps.use_bottleneck else plain_unit
    images = keras.Input(shape=(32, 32, 3), name='images')
    x = fast_network.whitening_stem(images, padding='same') if hps.whiten else images
    x = _conv(hps.filters[0], 3, 1, 'init_conv')(x)
    for stage, (width, stride) in enumerate(zip(hps.filters[1:], (1, 2, 2), strict=True), start=1):
        x = _stage(x, unit, bn_relu, stage, width, stride, hps.num_residual_units)
    x = bn_relu(x, 'unit_last')
    x = keras.layers.GlobalAveragePooling2D(name='pool')(x)
    logits = keras.layers.Dense(
        hps.num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(1.0, 'fan_in', 'uniform'),
        dtype='float32',  # logits, softmax and loss in float32 under mixed precision
        name='logits',
    )(x)
    return fast_network.initialize(keras.Model(images, fast_network.scale_logits(logits, hps), name='resnet'), hps)


# ---------------------------------------------------------------------------
# Training and evaluation steps.


class TrainOp(typing.NamedTuple):
    """What build_train_op makes: the compiled training step and the state it changes, which a
    checkpoint saves."""

    # A batch (images, int labels) in; cost, xent, weight_decay, precision, learning_rate out.
    train_step: typing.Callable
    state: TrainState


class ResNet:
    """Builds the Keras model of the network hps.network names (the original's ResNet, or airbench's:
    the design card keeps the name) and its compiled training and evaluation steps from HParams.

    The steps run under a tf.distribute strategy: each replica takes its share of the global batch
    and results are summed across replicas, so loss, learning rate and step mean the same on any
    number of devices. Keras' global policy sets the compute dtype; variables and loss stay float32.
    """

    def __init__(self, hps, sync_batch_norm=False, whitening=None):
        self.hps = hps
        self.sync_batch_norm = sync_batch_norm  # batch statistics over the global batch, not each replica's
        self.whitening = whitening  # with whiten, the stem's kernel for a new run (fast_network.whitening_kernel)

    def build_model(self):
        """A new Keras model that trains: standardized 32x32x3 images in, logits out."""
        model = network(self.hps, self.sync_batch_norm)
        if self.whitening is not None:
            fast_network.set_whitening(model, self.whitening)
        return model

    def losses(self, model, logits, labels):
        """Mean softmax cross-entropy on `model`'s logits (label-smoothed if asked), and the weight-decay
        term (conv and dense kernels, not biases, not batch norm, not the kernels Muon trains)."""
        xent = recipe.cross_entropy(logits, labels, self.hps.label_smoothing)
        if self.hps.decoupled:
            return xent, recipe.decoupled_weight_decay(model, self.hps)
        kernels = [
            layer.kernel
            for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
            and layer.name != fast_network.WHITEN
            and not recipe.trains_with_muon(layer.kernel, self.hps)
        ]
        weight_decay = self.hps.weight_decay_rate * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
        return xent, weight_decay

    def build_train_op(self, strategy=None, jit_compile=False, model=None):
        """The TrainOp of `model` (by default a new one from build_model): its training state (the
        model, its optimizer, step counter and, with ema_decay, the averaged model, all made in
        `strategy`'s scope) and the compiled training step that updates it. Under mixed_float16 the
        optimizer scales the loss, so small gradients survive.
        """
        hps, strategy = self.hps, strategy or tf.distribute.get_strategy()
        with strategy.scope():
            model = model if model is not None else self.build_model()
            optimizer = recipe.make_optimizer(hps)
            if keras.mixed_precision.global_policy().name == 'mixed_float16':
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
            averaged_model = None
            if hps.ema_decay:
                averaged_model = network(hps, self.sync_batch_norm)
                averaged_model.set_weights(model.get_weights())
            lookahead = recipe.Lookahead(model) if hps.lookahead_every else None

        @tf.function(jit_compile=jit_compile)
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                xent, weight_decay = self.losses(model, logits, labels)
                # This replica's part of the global mean; the optimizer sums gradients over replicas.
                batch = tf.cast(tf.size(labels), tf.float32)
                share = batch / tf.distribute.get_replica_context().all_reduce('SUM', batch)
                loss = xent * share + weight_decay / strategy.num_replicas_in_sync
                scaled_loss = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled_loss, model.trainable_variables)
            grads = recipe.scale_gradients(grads, model, hps, global_step)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return {
                'xent': xent * share,
                'weight_decay': weight_decay,
                'correct': _correct(logits, labels),
                'count': tf.size(labels),
            }

        @tf.function
        def train_step(images, labels):
            lr = recipe.set_learning_rates(optimizer, hps, global_step)
            results = strategy.run(replica_step, args=(images, labels))
            xent = strategy.reduce('SUM', results['xent'], axis=None)
            weight_decay = strategy.reduce('MEAN', results['weight_decay'], axis=None)
            correct, count = (strategy.reduce('SUM', results[name], axis=None) for name in ('correct', 'count'))
            if averaged_model is not None:
                recipe.update_average(averaged_model, model, hps.ema_decay, global_step)
            global_step.assign_add(1)
            if lookahead is not None:
                lookahead.update(model, hps, global_step)
            return {
                'cost': xent + weight_decay,
                'xent': xent,
                'weight_decay': weight_decay,
                'precision': tf.cast(correct, tf.float32) / tf.cast(count, tf.float32),
                'learning_rate': lr,
            }

        return TrainOp(train_step, TrainState(model, optimizer, global_step, averaged_model, lookahead))

    def build_eval_op(self, model, strategy=None, jit_compile=False, tta=True):
        """The compiled eval step of `model` (with ema_decay, pass TrainState.eval_model). For a batch
        of any size it gives the summed loss, the count of right predictions, the count of images,
        and the confusion matrix (rows: true labels, columns: predictions). tta=False: one view
        per image, whatever flip_tta and translate_tta say."""
        strategy = strategy or tf.distribute.get_strategy()
        hps = self.hps

        @tf.function(jit_compile=jit_compile)
        def replica_eval(images, labels):
            logits = recipe.inference_logits(model, images, hps.flip_tta and tta, hps.translate_tta and tta)
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            predictions = tf.argmax(logits, axis=1, output_type=labels.dtype)
            return {
                'loss_sum': tf.reduce_sum(xent),
                'correct': _correct(logits, labels),
                'count': tf.size(labels),
                'confusion': tf.math.confusion_matrix(labels, predictions, hps.num_classes, dtype=tf.int64),
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
