"""Batch normalization as the hparams ask for it, on TensorFlow's fused kernel, for both networks."""

import functools

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras batch norm computed by TensorFlow's fused kernel: one op instead of about ten.

    Keras 3 normalizes with separate moments, subtract, multiply and add ops, which the fused
    kernel does in one pass over the activations. Same variables, same moving averages (of the
    biased batch variance, as Keras and the original), same output.
    """

    def add_weight(self, *args, **kwargs):
        """Moving averages aggregate by mean across replicas. Keras creates them without, and
        every replica then keeps its own, of which the checkpoint holds the first replica's."""
        if not kwargs.get('trainable', True):
            kwargs['aggregation'] = 'mean'
        return super().add_weight(*args, **kwargs)

    def call(self, inputs, training=False):
        scale = self.gamma if self.scale else tf.ones_like(self.moving_mean)  # scale=False: no gamma
        fused = dict(scale=scale, offset=self.beta, epsilon=self.epsilon, data_format='NHWC')
        if not training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, mean=self.moving_mean, variance=self.moving_variance, is_training=False, **fused
            )
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(inputs, is_training=True, **fused)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
        variance *= (count - 1.0) / count  # the kernel returns the Bessel-corrected variance
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(self.momentum * self.moving_variance + (1.0 - self.momentum) * variance)
        return outputs


def batch_norm_layer(hps, sync_batch_norm):
    """Batch norm as the hparams say (bn_decay, bn_epsilon, with or without scale: bn_scale), on
    the fused kernel, or synchronized over the global batch with sync_batch_norm."""
    settings = dict(momentum=hps.bn_decay, epsilon=hps.bn_epsilon, scale=hps.bn_scale)
    if sync_batch_norm:
        return functools.partial(keras.layers.BatchNormalization, synchronized=True, **settings)
    return functools.partial(FusedBatchNormalization, **settings)
