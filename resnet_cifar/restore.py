"""A trained network restored from a checkpoint, as eval, predict and export use it."""

import tensorflow as tf

import resnet_model
from resnet_cifar import train_state


def restore_model(checkpoint, hps, strategy=None):
    """A new Keras model for `hps`, made in `strategy`'s scope, with the weights of `checkpoint`
    that inference uses: its weight average when it holds one (ema_decay), else the trained
    weights. Raises if the checkpoint does not fit the network."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = resnet_model.ResNet(hps).build_model()
    key = 'averaged_model' if train_state.holds(checkpoint, 'averaged_model') else 'model'
    tf.train.Checkpoint(**{key: model}).restore(checkpoint).expect_partial().assert_existing_objects_matched()
    return model
