"""The training recipe around the network: learning-rate schedule, loss, optimizer, weight
average and flip test-time augmentation. Each is an hparam; at its default it is the 2016
recipe's, unchanged."""

import keras
import tensorflow as tf

AVERAGED_MODEL = 'averaged_model'  # the checkpoint key of the weight average (ema_decay > 0)


def learning_rate(hps, step):
    """The rate for `step`, after a linear warm-up over warmup_steps.

    piecewise (2016): lrn_rate, divided by 10 at each of lr_boundaries, never below min_lrn_rate.
    cosine: from lrn_rate after the warm-up down to min_lrn_rate at train_steps.
    """
    step = tf.cast(step, tf.float32)
    if hps.lr_schedule == 'cosine':
        decay_steps = hps.train_steps - hps.warmup_steps
        cosine = keras.optimizers.schedules.CosineDecay(
            hps.lrn_rate, decay_steps, alpha=hps.min_lrn_rate / hps.lrn_rate
        )
        lr = cosine(tf.maximum(step - hps.warmup_steps, 0.0))
    else:
        divisions = tf.reduce_sum(tf.cast(step >= tf.constant(hps.lr_boundaries, tf.float32), tf.float32))
        lr = tf.maximum(hps.lrn_rate * tf.pow(0.1, divisions), hps.min_lrn_rate)
    if hps.warmup_steps:
        lr *= tf.minimum(1.0, (step + 1.0) / hps.warmup_steps)
    return lr


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
    """SGD: plain ('sgd'), with momentum ('mom', the original's) or with Nesterov momentum ('nesterov')."""
    momentum = 0.0 if hps.optimizer == 'sgd' else hps.momentum
    return keras.optimizers.SGD(learning_rate=hps.lrn_rate, momentum=momentum, nesterov=hps.optimizer == 'nesterov')


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


def inference_logits(model, images, flip_tta=False):
    """The logits of standardized images; with flip_tta, the mean of an image's and its mirror's."""
    logits = model(images, training=False)
    if flip_tta:
        logits = (logits + model(tf.image.flip_left_right(images), training=False)) / 2.0
    return logits


def has_average(path):
    """Whether the checkpoint at `path` holds a weight average."""
    return any(name.startswith(AVERAGED_MODEL + '/') for name, _ in tf.train.list_variables(path))


def restore_for_inference(path, model, **others):
    """Restores into `model` the weights eval and prediction use: the weight average when the
    checkpoint holds one, else the trained weights. `others` are more objects to restore."""
    key = AVERAGED_MODEL if has_average(path) else 'model'
    return tf.train.Checkpoint(**{key: model}, **others).restore(path).expect_partial()
