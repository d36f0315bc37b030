"""The trained network as a model of Keras' own layers only, with the preprocessing and the
test-time augmentation that predict applies: uint8 images in, class probabilities out.

The training network holds two things that only this project can load: the fused batch-norm
layer (batch_norm.py) and the Lambda that zero-pads the shortcut's channels. Here they become
Keras' BatchNormalization, with the same weights, and a ZeroPadding3D over the channels, so
`keras.saving.load_model` opens the saved model in safe mode without the project, and Keras'
exporters (LiteRT, ONNX) convert it with the converters' built-in ops. It is float32, whatever
the dtype policy the run trained with.
"""

import keras
import numpy as np

from resnet_cifar.batch_norm import FusedBatchNormalization

FLOAT32 = 'float32'


def _clone_layer(layer):
    """The layer rebuilt from its config, in float32; the fused batch norm as Keras' own."""
    if isinstance(layer, keras.layers.Lambda):
        return layer  # never called: _call_layer replaces it
    config = {**layer.get_config(), 'dtype': FLOAT32}
    if isinstance(layer, FusedBatchNormalization):
        return keras.layers.BatchNormalization.from_config(config)
    return layer.__class__.from_config(config)


def _call_layer(layer, *args, **kwargs):
    """The shortcut's channel padding (the only Lambda) as Reshape, ZeroPadding3D, Reshape: the
    same zeros the Lambda's tf.pad adds, each side's count read from its input and output."""
    if not isinstance(layer, keras.layers.Lambda):
        return layer(*args, **kwargs)
    (x,) = args
    height, width, channels = x.shape[1:]
    out_channels = layer.output.shape[-1]
    before = (out_channels - channels) // 2
    x = keras.layers.Reshape((height, width, channels, 1), name=f'{layer.name}_5d')(x)
    x = keras.layers.ZeroPadding3D(((0, 0), (0, 0), (before, out_channels - channels - before)), name=layer.name)(x)
    return keras.layers.Reshape((height, width, out_channels), name=f'{layer.name}_4d')(x)


def _portable_network(model):
    """A copy of `model` (standardized images in, logits out) in Keras' own layers, same weights."""
    network = keras.models.clone_model(model, clone_function=_clone_layer, call_function=_call_layer)
    for layer in model.layers:
        if layer.weights:
            network.get_layer(layer.name).set_weights(layer.get_weights())
    return network


def _move_axis(images, matrix, axis, name):
    """Images with `axis` (1: height, 2: width) mapped by `matrix` (out = matrix @ in along it): a
    frozen Dense on that axis whose one-hot rows move each pixel unchanged."""
    order = (1, 3, 2) if axis == 2 else (3, 2, 1)  # the axis last, and back: each is its own inverse
    x = keras.layers.Permute(order, name=f'{name}_to')(images)
    move = keras.layers.Dense(matrix.shape[0], use_bias=False, trainable=False, name=name)
    x = move(x)
    move.set_weights([matrix.T.astype(np.float32)])
    return keras.layers.Permute(order, name=f'{name}_back')(x)


def _mirror(images, name='mirror'):
    """Left-right mirror images, as tf.image.flip_left_right."""
    return _move_axis(images, np.eye(images.shape[2])[::-1], 2, name)


def _shift(images, by, name):
    """Images moved `by` (1 or -1) pixels down and right, the border filled by reflection, as
    recipe.inference_logits' translate_tta crops a reflect-padded image."""
    shifted = images
    for axis in (1, 2):
        size = images.shape[axis]
        sources = np.abs(np.arange(size) - by)  # row i shows row i - by, reflected at both ends
        sources = np.where(sources > size - 1, 2 * (size - 1) - sources, sources)
        shifted = _move_axis(shifted, np.eye(size)[sources], axis, f'{name}_{axis}')
    return shifted


def build(model, hps):
    """The portable Keras model of `model`, the trained network that `hps` describes: uint8
    images [N, 32, 32, 3] in; out {'probabilities': [N, num_classes]}, what predict computes.

    Its layers: a cast to float; per-image standardization as LayerNormalization over the whole
    image (the zero mean and unit variance of tf.image.per_image_standardization, whose lower
    bound on the deviation, 1/sqrt(3072) of a level, only touches images of nearly one colour); the
    network; with flip_tta, the mean of its logits for the image and its mirror; with translate_tta,
    half those and a quarter each those of the image moved one pixel either way; a softmax.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(FLOAT32)  # a mixed-precision run's model is built float32 too
    try:
        return _build(model, hps.flip_tta, hps.translate_tta)
    finally:
        keras.config.set_dtype_policy(previous)


def _build(model, flip_tta, translate_tta):
    network = _portable_network(model)
    images = keras.Input((32, 32, 3), dtype='uint8', name='images')
    x = keras.layers.Rescaling(1.0, name='to_float')(images)
    x = keras.layers.LayerNormalization(axis=[1, 2, 3], epsilon=1e-12, center=False, scale=False, name='standardize')(x)

    def views(x, name):
        logits = network(x)
        if flip_tta:
            logits = keras.layers.Average(name=f'{name}_flip_tta')([logits, network(_mirror(x, f'{name}_mirror'))])
        return logits

    logits = views(x, 'image')
    if translate_tta:
        moved = [views(_shift(x, by, name), name) for by, name in ((1, 'shift_down'), (-1, 'shift_up'))]
        logits = keras.layers.Average(name='translate_tta')([logits, keras.layers.Average(name='moved')(moved)])
    probabilities = keras.layers.Softmax(name='probabilities')(logits)
    return keras.Model(images, {'probabilities': probabilities}, name='resnet_cifar')
