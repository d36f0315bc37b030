"""airbench94's network (Jordan 2024, arXiv 2404.00498) and the network tricks any network here
can use: the whitening stem, identity (dirac) initialization, a scale on the logits.

    images -> whitening stem (a frozen 2x2 conv from the training patches' eigenvectors, GELU)
           -> three conv groups (conv, max-pool, batch norm, GELU, conv, batch norm, GELU)
           -> global max-pool -> dense, no bias -> times logit_scale

Each trick's evidence (airbench94's ablation, epochs to 94% on CIFAR-10) is in docs/fast.md.
"""

import keras
import numpy as np
import tensorflow as tf

import cifar_input
from resnet_cifar.batch_norm import batch_norm_layer
from resnet_cifar.hparams_schema import WHITEN_WIDTH

WHITEN = 'whiten'  # the whitening stem's conv layer
WHITEN_SIZE = 2  # its patches are 2x2x3: 12 numbers
WHITEN_EPSILON = 5e-4  # added to each eigenvalue, as airbench: the flattest directions are not blown up
WHITENING_IMAGES = 5000  # the patches of the first 5,000 training images (airbench's) estimate the covariance


def torch_default_initializer():
    """PyTorch's default for conv and linear kernels, which airbench keeps: uniform in +-1/sqrt(fan_in)."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, 'fan_in', 'uniform')


def whitening_kernel(images):
    """The whitening stem's kernel [2, 2, 3, 24], float32, from uint8 training images [N, 32, 32, 3]:
    the eigenvectors of the second-moment matrix of their standardized 2x2 patches, each divided by
    the square root of its eigenvalue (+ WHITEN_EPSILON), largest first, then their negatives. The
    stem's outputs on these patches then have (about) unit variance and no correlation."""
    second_moment, count = np.zeros((12, 12)), 0
    for batch in tf.data.Dataset.from_tensor_slices(images[:WHITENING_IMAGES]).batch(500):
        patches = tf.image.extract_patches(
            cifar_input.standardize(batch), [1, WHITEN_SIZE, WHITEN_SIZE, 1], [1, 1, 1, 1], [1, 1, 1, 1], 'VALID'
        )
        flat = patches.numpy().reshape(-1, 12).astype(np.float64)  # each row: rows, columns, channels
        second_moment += flat.T @ flat
        count += flat.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(second_moment / count)  # ascending
    scaled = eigenvectors[:, ::-1] / np.sqrt(eigenvalues[::-1] + WHITEN_EPSILON)
    kernel = np.concatenate([scaled, -scaled], axis=1)
    return kernel.reshape(WHITEN_SIZE, WHITEN_SIZE, 3, WHITEN_WIDTH).astype(np.float32)


def whitening_stem(x, padding='valid'):
    """The whitening conv, then GELU. Its kernel is set from the training images (set_whitening)
    and never trains (recipe.scale_gradients zeroes its gradient); its bias trains for
    whiten_bias_steps."""
    x = keras.layers.Conv2D(WHITEN_WIDTH, WHITEN_SIZE, padding=padding, kernel_initializer='zeros', name=WHITEN)(x)
    return keras.layers.Activation('gelu', name=WHITEN + '_gelu')(x)


def set_whitening(model, kernel):
    """Puts a whitening_kernel into `model`'s stem."""
    model.get_layer(WHITEN).kernel.assign(kernel)


def dirac(kernel):
    """A conv kernel [h, w, in, out] whose first min(in, out) filters are the identity: filter i
    passes input channel i through its centre tap (torch.nn.init.dirac_, as airbench)."""
    kernel = np.array(kernel)
    height, width, channels_in, channels_out = kernel.shape
    identity = np.arange(min(channels_in, channels_out))
    kernel[..., identity] = 0.0
    kernel[height // 2, width // 2, identity, identity] = 1.0
    return kernel


def initialize(model, hps):
    """`model` after the initialization its hparams ask for: with dirac_init, every conv but the
    whitening stem's starts as dirac(its random kernel), so each layer begins near the identity."""
    if hps.dirac_init:
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D) and layer.name != WHITEN:
                layer.kernel.assign(dirac(layer.kernel.numpy()))
    return model


def scale_logits(logits, hps):
    """The logits times logit_scale (1/9 in airbench: softer targets early on); unchanged at 1."""
    if hps.logit_scale == 1.0:
        return logits
    return keras.layers.Rescaling(hps.logit_scale, dtype='float32', name='logit_scale')(logits)


def _conv(width, name):
    return keras.layers.Conv2D(
        width, 3, padding='same', use_bias=False, kernel_initializer=torch_default_initializer(), name=name
    )


def conv_group(x, width, batch_norm, name):
    """airbench's group: a 3x3 conv, a 2x2 max-pool, batch norm, GELU, a 3x3 conv, batch norm, GELU."""
    x = _conv(width, name + '_conv1')(x)
    x = keras.layers.MaxPooling2D(2, name=name + '_pool')(x)
    x = batch_norm(name=name + '_bn1')(x)
    x = keras.layers.Activation('gelu', name=name + '_gelu1')(x)
    x = _conv(width, name + '_conv2')(x)
    x = batch_norm(name=name + '_bn2')(x)
    return keras.layers.Activation('gelu', name=name + '_gelu2')(x)


def network(hps, sync_batch_norm=False):
    """airbench's network as a new Keras model: standardized 32x32x3 images in, logits out.
    filters: [stem, group 1, group 2, group 3] widths (airbench: 24, 64, 256, 256); the stem is the
    whitening conv with whiten (24 wide), else a trained 2x2 conv."""
    images = keras.Input(shape=(32, 32, 3), name='images')
    if hps.whiten:
        x = whitening_stem(images)
    else:
        x = keras.layers.Conv2D(
            hps.filters[0], WHITEN_SIZE, kernel_initializer=torch_default_initializer(), name='stem'
        )(images)
        x = keras.layers.Activation('gelu', name='stem_gelu')(x)
    batch_norm = batch_norm_layer(hps, sync_batch_norm)
    for group, width in enumerate(hps.filters[1:], start=1):
        x = conv_group(x, width, batch_norm, name=f'group_{group}')
    x = keras.layers.GlobalMaxPooling2D(name='pool')(x)
    logits = keras.layers.Dense(
        hps.num_classes,
        use_bias=False,
        kernel_initializer=torch_default_initializer(),
        dtype='float32',  # logits, softmax and loss in float32 under mixed precision
        name='logits',
    )(x)
    return initialize(keras.Model(images, scale_logits(logits, hps), name='airbench'), hps)


def network_name(hps):
    """'airbench (64/256/256)': the groups' widths."""
    return f'airbench ({"/".join(str(width) for width in hps.filters[1:])})'
