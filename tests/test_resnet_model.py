"""resnet_model: the network, its loss, its train and eval steps, and the hparams it refuses."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_hparams

import cifar_input
import resnet_model
from resnet_cifar import batch_norm, presets
from resnet_cifar.hparams_check import HParamsError, make_hparams


@pytest.mark.parametrize('bottleneck', [False, True])
def test_output_shape_for_any_batch_size(bottleneck):
    filters = [16, 64, 128, 256] if bottleneck else [16, 16, 32, 64]
    model = resnet_model.ResNet(tiny_hparams(use_bottleneck=bottleneck, filters=filters, num_classes=100)).build_model()
    for batch in (1, 7):
        assert model(tf.zeros([batch, 32, 32, 3])).shape == (batch, 100)


def test_defaults_are_the_originals():
    hps = presets.load_preset('resnet32')
    assert hps == resnet_model.DEFAULT_HPARAMS
    assert (hps.batch_size, hps.lrn_rate, hps.min_lrn_rate, hps.weight_decay_rate) == (128, 0.1, 1e-4, 2e-4)
    assert (hps.relu_leakiness, hps.momentum, hps.bn_decay, hps.bn_epsilon) == (0.1, 0.9, 0.9, 1e-3)
    assert hps.lr_boundaries == [40000, 60000, 80000] and hps.optimizer == 'mom'


def _batch(size, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = cifar_input.standardize(tf.constant(rng.integers(0, 256, (size, 32, 32, 3)), tf.float32))
    return images, tf.constant(rng.integers(0, num_classes, size), tf.int32)


def test_loss_is_cross_entropy_of_the_logits_not_of_softmax_outputs():
    resnet = resnet_model.ResNet(tiny_hparams(weight_decay_rate=0.0))
    model = resnet.build_model()
    dense = model.get_layer('logits')
    dense.kernel.assign(dense.kernel * 200.0)  # confident logits: where the double softmax would show
    images, labels = _batch(16)
    logits = model(images, training=True).numpy().astype(np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    expected = -log_probs[np.arange(16), labels.numpy()].mean()
    # Softmax outputs fed in as logits cannot give a loss above log(1 + 9e) ~ 3.2.
    assert expected > 5
    xent = resnet.build_train_op(model=model).train_step(images, labels)['xent']
    np.testing.assert_allclose(float(xent), expected, rtol=1e-4)


def test_weight_decay_is_l2_of_conv_and_dense_kernels_only():
    resnet = resnet_model.ResNet(tiny_hparams(weight_decay_rate=0.01))
    model = resnet.build_model()
    kernels = [v for v in model.trainable_variables if 'kernel' in v.path]
    assert len(kernels) == 1 + 3 * 2 + 1  # stem, two convs per unit, dense
    expected = 0.01 * sum(float(tf.reduce_sum(k**2)) / 2 for k in kernels)
    _, decay = resnet.losses(model, model(_batch(4)[0]), _batch(4)[1])
    np.testing.assert_allclose(float(decay), expected, rtol=1e-5)


def test_train_step_updates_weights_moving_averages_and_step():
    resnet = resnet_model.ResNet(tiny_hparams())
    model = resnet.build_model()
    train_op = resnet.build_train_op(model=model)
    assert train_op.state.model is model and train_op.state.eval_model is model, 'without ema_decay, eval uses it'
    bn = model.get_layer('unit_last_bn')
    before_mean, before_kernel = bn.moving_mean.numpy(), model.get_layer('init_conv').kernel.numpy()
    result = train_op.train_step(*_batch(32))
    assert int(train_op.state.step) == 1
    assert set(result) == {'cost', 'xent', 'weight_decay', 'precision', 'learning_rate'}
    assert not np.allclose(bn.moving_mean.numpy(), before_mean)
    assert not np.allclose(model.get_layer('init_conv').kernel.numpy(), before_kernel)


def test_eval_step_handles_a_partial_batch():
    resnet = resnet_model.ResNet(tiny_hparams())
    eval_step = resnet.build_eval_op(resnet.build_model())
    for size in (32, 5):
        images, labels = _batch(size)
        result = eval_step(images, labels)
        confusion = result['confusion'].numpy()
        assert int(result['count']) == size == confusion.sum()
        assert int(result['correct']) == np.trace(confusion)
        assert (confusion.sum(axis=1) == np.bincount(labels.numpy(), minlength=10)).all(), 'rows are true labels'


def test_fixed_batch_of_real_images_is_overfit(subset):
    files = cifar_input.list_files(f'{subset}/data_batch_1.bin', 'cifar10')
    images, labels = cifar_input.read_records(files, 'cifar10')
    images, labels = cifar_input.standardize(tf.cast(images[:128], tf.float32)), labels[:128]
    keras.utils.set_random_seed(0)
    resnet = resnet_model.ResNet(tiny_hparams(batch_size=128))
    step = resnet.build_train_op().train_step
    precision = 0.0
    for _ in range(300):
        precision = float(step(images, labels)['precision'])
        if precision == 1.0:
            break
    assert precision == 1.0


@pytest.mark.parametrize(
    'values, key',
    [
        ({'learning_rate': 0.1}, 'learning_rate'),
        ({'lrn_rate': -0.1}, 'lrn_rate'),
        ({'lrn_rate': 0}, 'lrn_rate'),
        ({'num_residual_units': 0}, 'num_residual_units'),
        ({'lr_boundaries': [720, 480]}, 'lr_boundaries'),
        ({'batch_size': 0}, 'batch_size'),
        ({'optimizer': 'adam'}, 'optimizer'),
        ({'filters': [16, 16, 32]}, 'filters'),
        ({'train_steps': 1.5}, 'train_steps'),
        ({'use_bottleneck': True, 'filters': [16, 16, 32, 66]}, 'filters'),
        ({'lr_schedule': 'linear'}, 'lr_schedule'),
        ({'lr_schedule': 'cosine', 'warmup_steps': 100, 'train_steps': 100}, 'warmup_steps'),
        ({'label_smoothing': 1.0}, 'label_smoothing'),
        ({'ema_decay': -0.1}, 'ema_decay'),
        ({'ema_decay': 1}, 'ema_decay'),
        ({'cutout': 32}, 'cutout'),
        ({'cutout': -1}, 'cutout'),
        ({'flip_tta': 'yes'}, 'flip_tta'),
    ],
)
def test_bad_hparams_are_refused_naming_the_key(values, key):
    with pytest.raises(HParamsError, match=key):
        make_hparams(values)


@pytest.mark.parametrize('training', [True, False])
def test_fused_batch_norm_matches_keras_batch_norm(training):
    x = tf.random.stateless_normal([8, 6, 6, 5], seed=[1, 2]) * 3.0 + 1.0
    fused = batch_norm.FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    fused.build(x.shape)
    plain.build(x.shape)
    for layer in (fused, plain):
        layer.gamma.assign(tf.linspace(0.5, 1.5, 5))
        layer.beta.assign(tf.linspace(-1.0, 1.0, 5))
        layer.moving_mean.assign(tf.fill([5], 0.3))
        layer.moving_variance.assign(tf.fill([5], 2.0))
    np.testing.assert_allclose(fused(x, training=training), plain(x, training=training), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)
    assert np.allclose(fused.moving_mean, 0.3) != training, 'moving averages change only in training'
