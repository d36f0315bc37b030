"""The training recipe around the network: learning-rate schedule, loss, optimizer, weight
averages and test-time augmentation. Each is an hparam; at its default it is the 2016
recipe's, unchanged."""

import keras
import tensorflow as tf

from resnet_cifar import fast_network, muon

DECOUPLED_EXAMPLES = 1024  # with decoupled, lrn_rate and weight_decay_rate are per this many examples
WHITEN_KERNEL = f'{fast_network.WHITEN}/kernel'  # the frozen whitening kernel's variable path


def learning_rate(hps, step):
    """The rate for `step`, after a linear warm-up over warmup_steps.

    piecewise (2016): lrn_rate, divided by 10 at each of lr_boundaries, never below min_lrn_rate.
    cosine: from lrn_rate after the warm-up down to min_lrn_rate at train_steps.
    triangular (one-cycle): from lrn_rate after the warm-up down in a straight line to min_lrn_rate
    at train_steps; with warmup_from, the warm-up rises in a straight line from that fraction.
    With decoupled, the result is times decoupled_rate_scale.
    """
    step = tf.cast(step, tf.float32)
    if hps.lr_schedule == 'cosine':
        decay_steps = hps.train_steps - hps.warmup_steps
        cosine = keras.optimizers.schedules.CosineDecay(
            hps.lrn_rate, decay_steps, alpha=hps.min_lrn_rate / hps.lrn_rate
        )
        lr = cosine(tf.maximum(step - hps.warmup_steps, 0.0))
    elif hps.lr_schedule == 'triangular':
        fall = tf.clip_by_value((step - hps.warmup_steps) / (hps.train_steps - hps.warmup_steps), 0.0, 1.0)
        lr = hps.lrn_rate + (hps.min_lrn_rate - hps.lrn_rate) * fall
    else:
        divisions = tf.reduce_sum(tf.cast(step >= tf.constant(hps.lr_boundaries, tf.float32), tf.float32))
        lr = tf.maximum(hps.lrn_rate * tf.pow(0.1, divisions), hps.min_lrn_rate)
    if hps.warmup_steps:
        ramp = tf.minimum(1.0, (step + 1.0) / hps.warmup_steps)
        lr *= hps.warmup_from + (1.0 - hps.warmup_from) * ramp if hps.warmup_from else ramp
    if hps.decoupled:
        lr *= decoupled_rate_scale(hps)
    return lr


def decoupled_rate_scale(hps):
    """With decoupled, the step's rate is lrn_rate times this: batch_size / 1024, over airbench's
    1 + 1 / (1 - momentum), by which momentum lengthens the steps of a steady gradient. The step
    size then follows lrn_rate alone, whatever the batch and the momentum."""
    momentum = 0.0 if hps.optimizer == 'sgd' else hps.momentum
    return hps.batch_size / (DECOUPLED_EXAMPLES * (1.0 + 1.0 / (1.0 - momentum)))


def decoupled_weight_decay(model, hps):
    """The weight-decay term with decoupled (airbench's): every trained variable but the frozen
    whitening kernel shrinks each step by the same share, weight_decay_rate per 1024 examples
    whatever lrn_rate: weight_decay_rate / lrn_rate times its L2 loss, over bn_bias_lr for the
    batch-norm offsets, whose gradients scale_gradients multiplies by it."""
    offsets = {id(variable) for variable in batch_norm_offsets(model)}
    terms = [
        tf.nn.l2_loss(variable) / (hps.bn_bias_lr if id(variable) in offsets else 1.0)
        for variable in model.trainable_variables
        if variable.path != WHITEN_KERNEL and not trains_with_muon(variable, hps)
    ]
    return hps.weight_decay_rate / hps.lrn_rate * tf.add_n(terms)


def batch_norm_offsets(model):
    """The trained offsets (biases) of `model`'s batch norms."""
    return [layer.beta for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.center]


def scale_gradients(grads, model, hps, step):
    """The gradients of model.trainable_variables as the optimizer takes them, at `step`: the
    batch-norm offsets' times bn_bias_lr (with SGD, that much more rate), the whitening kernel's
    zeroed (it never trains), the whitening bias's zeroed from whiten_bias_steps on."""
    if hps.bn_bias_lr == 1.0 and not hps.whiten:
        return grads
    scales = {id(offset): hps.bn_bias_lr for offset in batch_norm_offsets(model)}
    if hps.whiten:
        stem = model.get_layer(fast_network.WHITEN)
        scales[id(stem.kernel)] = 0.0
        if hps.whiten_bias_steps:
            scales[id(stem.bias)] = tf.cast(step < hps.whiten_bias_steps, tf.float32)
    variables = model.trainable_variables
    return [grad * scales[id(v)] if id(v) in scales else grad for grad, v in zip(grads, variables, strict=True)]


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean softmax cross-entropy; with label_smoothing, against targets moved that share of the
    way towards uniform."""
    if not label_smoothing:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    targets = tf.one_hot(labels, tf.shape(logits)[-1])
    return tf.reduce_mean(
        keras.losses.categorical_crossentropy(targets, logits, from_logits=True, label_smoothing=label_smoothing)
    )


def make_optimizer(hps):
    """SGD: plain ('sgd'), with momentum ('mom', the original's) or with Nesterov momentum
    ('nesterov'); 'muon': Muon for the conv kernels (muon_lrn_rate, muon_momentum), SGD with
    Nesterov momentum for the rest."""
    momentum = 0.0 if hps.optimizer == 'sgd' else hps.momentum
    nesterov = hps.optimizer in ('nesterov', 'muon')
    sgd = keras.optimizers.SGD(learning_rate=hps.lrn_rate, momentum=momentum, nesterov=nesterov)
    if hps.optimizer != 'muon':
        return sgd
    return muon.MuonAndSGD(muon.ConvMuon(hps.muon_lrn_rate, hps.muon_momentum), sgd, frozen_paths=(WHITEN_KERNEL,))


def trains_with_muon(variable, hps):
    """Whether `variable` is a conv kernel that Muon trains (optimizer 'muon'); these take no
    weight decay (Muon keeps their norm)."""
    return hps.optimizer == 'muon' and muon.is_trained_filter(variable, (WHITEN_KERNEL,))


def set_learning_rates(optimizer, hps, step):
    """Sets the optimizer's rates for `step` and returns learning_rate's: with 'muon', Muon's
    rate is muon_lrn_rate on the same schedule (warm-up and decay) as the SGD rate."""
    lr = learning_rate(hps, step)
    if hps.optimizer != 'muon':
        optimizer.learning_rate.assign(lr)
        return lr
    optimizer = getattr(optimizer, 'inner_optimizer', optimizer)  # under a LossScaleOptimizer
    optimizer.sgd.learning_rate.assign(lr)
    peak = hps.lrn_rate * (decoupled_rate_scale(hps) if hps.decoupled else 1.0)  # the schedule's 1
    optimizer.muon.learning_rate.assign(lr * (hps.muon_lrn_rate / peak))
    return lr


def update_average(averaged_model, model, ema_decay, step):
    """Moves every weight of `averaged_model`, batch-norm statistics included, towards `model`'s.

    The statistics are averaged over the same steps as the weights, so they fit the averaged
    network. As tf.train.ExponentialMovingAverage with num_updates, the decay starts low
    ((1 + step) / (10 + step)), so the random initial weights soon stop counting.
    """
    step = tf.cast(step, tf.float32)
    decay = tf.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    for average, weight in zip(averaged_model.weights, model.weights, strict=True):
        average.assign(decay * average + (1.0 - decay) * tf.cast(weight, average.dtype))


class Lookahead(tf.Module):
    """airbench's lookahead: every lookahead_every steps from lookahead_start, an average of the
    weights (batch-norm statistics too) moves towards them and is copied back into them, so that
    training goes on from the average (ema_decay's only serves eval). Its decay rises over the run,
    lookahead_decay ** lookahead_every * (step / train_steps) ** 3: little averaging early, much at
    the end. The first update starts the average at the weights; the last step updates too."""

    def __init__(self, model):
        super().__init__(name='lookahead')
        self.average = [tf.Variable(tf.convert_to_tensor(weight), trainable=False) for weight in model.weights]

    def update(self, model, hps, step):
        """The update after `step` steps (an int64 tensor), where it is due; elsewhere nothing changes."""
        every, start = hps.lookahead_every, hps.lookahead_start
        due = (step >= start) & ((step % every == 0) | (step == hps.train_steps))
        first = step - every < start
        decay = hps.lookahead_decay**every * (tf.cast(step, tf.float32) / hps.train_steps) ** 3
        for average, weight in zip(self.average, model.weights, strict=True):
            moved = tf.where(first, weight, average + (1.0 - decay) * (weight - average))
            average.assign(tf.where(due, moved, average))
            weight.assign(tf.where(due, moved, weight))


def inference_logits(model, images, flip_tta=False, translate_tta=False):
    """The logits of standardized images; with flip_tta, the mean of an image's and its mirror's;
    with translate_tta (airbench's), half those and a quarter each those of the image moved one
    pixel down and right and one up and left (the border filled in by reflection)."""

    def views(x):
        logits = model(x, training=False)
        if flip_tta:
            logits = (logits + model(tf.image.flip_left_right(x), training=False)) / 2.0
        return logits

    logits = views(images)
    if translate_tta:
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='REFLECT')
        logits = (logits + (views(padded[:, :-2, :-2]) + views(padded[:, 2:, 2:])) / 2.0) / 2.0
    return logits
