"""optimizer 'muon': Muon's step on a conv kernel against a plain NumPy Newton-Schulz, what it
trains and what SGD trains, an exact resume, and bfloat16."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_FAST, tiny_config, tiny_hparams, train_stopped_then_resumed

import resnet_model
from resnet_cifar import devices, fast_network, muon, recipe, training

MUON = {**TINY_FAST, 'optimizer': 'muon', 'muon_lrn_rate': 0.2, 'muon_momentum': 0.6, 'lookahead_every': 0}


def _newton_schulz(update, steps=3):
    """airbench94_muon's orthogonalization, written out: a quintic Newton-Schulz iteration on the
    matrix scaled to Frobenius norm 1, on its wide side."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update / (np.linalg.norm(update) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_steps_a_conv_kernel_as_numpy_newton_schulz():
    """Two steps, so that the Nesterov momentum counts: the kernel [3, 3, 4, 6] is scaled to norm
    sqrt(6), then moves by the orthogonalized update of the kernel flattened to [36, 6]."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    gradients = [rng.normal(size=kernel.shape).astype(np.float32) for _ in range(2)]
    lr, momentum = 0.2, 0.6
    variable = tf.Variable(kernel)
    optimizer = muon.ConvMuon(lr, momentum)
    expected, buffer = kernel.astype(np.float64), np.zeros(kernel.shape)
    for gradient in gradients:
        optimizer.apply_gradients([(tf.constant(gradient), variable)])
        buffer = momentum * buffer + gradient
        nesterov = gradient + momentum * buffer
        expected = expected * np.sqrt(6) / np.linalg.norm(expected)
        expected = expected - lr * _newton_schulz(nesterov.reshape(36, 6)).reshape(kernel.shape)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=2e-4, atol=2e-5)
    assert np.linalg.norm(expected - kernel) > 1.0, 'the steps must move the kernel'


def test_muon_trains_the_conv_kernels_and_sgd_the_rest():
    """One step from the same weights: SGD's variables (biases, batch-norm offsets, the head) move
    as with optimizer 'nesterov', the conv kernels otherwise, the whitening kernel not at all; the
    conv kernels take no weight decay."""
    rng = np.random.default_rng(1)
    images = tf.image.per_image_standardization(rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, 32, dtype=np.int32))
    whitening = fast_network.whitening_kernel(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    hps = {name: tiny_hparams(**{**MUON, 'optimizer': name}) for name in ('nesterov', 'muon')}
    initial, stepped = None, {}
    for name in ('nesterov', 'muon'):
        resnet = resnet_model.ResNet(hps[name], whitening=whitening)
        model = resnet.build_model()
        if initial is None:
            initial = {v.path: v.numpy() for v in model.weights}
        model.set_weights([initial[v.path] for v in model.weights])
        train_op = resnet.build_train_op(model=model)
        train_op.train_step(images, labels)
        stepped[name] = {v.path: v.numpy() for v in model.trainable_variables}

    kernels = [v for v in model.trainable_variables if recipe.trains_with_muon(v, hps['muon'])]
    assert len(kernels) == 6 and recipe.WHITEN_KERNEL not in [v.path for v in kernels]
    model.set_weights([initial[v.path] for v in model.weights])
    decay_difference = float(recipe.decoupled_weight_decay(model, hps['nesterov'])) - float(
        recipe.decoupled_weight_decay(model, hps['muon'])
    )
    kernels_decay = MUON['weight_decay_rate'] / MUON['lrn_rate'] * sum(float(tf.nn.l2_loss(v)) for v in kernels)
    assert decay_difference == pytest.approx(kernels_decay, rel=1e-4)
    for path, value in stepped['muon'].items():
        if path == recipe.WHITEN_KERNEL:
            np.testing.assert_array_equal(value, initial[path])
        elif path in [v.path for v in kernels]:
            assert np.abs(value - stepped['nesterov'][path]).max() > 1e-3, path
        else:
            np.testing.assert_allclose(value, stepped['nesterov'][path], rtol=1e-5, atol=1e-7, err_msg=path)
            assert np.abs(value - initial[path]).max() > 0, path


def _checkpoint(path):
    reader = tf.train.load_checkpoint(str(path))
    names = reader.get_variable_to_shape_map()
    return {name: reader.get_tensor(name) for name in names if name.startswith(('model/', 'optimizer/'))}


def test_a_muon_run_resumes_exactly(subset, tmp_path, monkeypatch):
    """6 steps in one go, or 3, Ctrl-C, and the same call again: the same checkpoint, Muon's
    momentum included, bit for bit."""
    switches = {**MUON, 'train_steps': 6}
    one_go = tiny_config(tmp_path / 'one_go', subset, switches, seed=3)
    resumed = tiny_config(tmp_path / 'resumed', subset, switches, seed=3, summary_every_steps=3)
    training.train(one_go)
    assert train_stopped_then_resumed(monkeypatch, resumed) == ((3, 'SIGINT'), (6, None))
    expected, actual = _checkpoint(tmp_path / 'one_go' / 'ckpt-6'), _checkpoint(tmp_path / 'resumed' / 'ckpt-6')
    assert expected.keys() == actual.keys()
    assert sum(name.startswith('optimizer/muon/_variables/') for name in expected) == 6, 'a momentum per kernel'
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def test_muon_trains_in_bfloat16_with_float32_state(subset, tmp_path):
    config = tiny_config(tmp_path, subset, {**MUON, 'train_steps': 3})
    devices.configure_tensorflow(dtype='bfloat16')
    try:
        training.train(config)
    finally:
        devices.configure_tensorflow()
    reader = tf.train.load_checkpoint(str(tmp_path / 'ckpt-3'))
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if name.startswith(('model/', 'optimizer/muon/_variables/')):
            assert dtype == tf.float32 and np.isfinite(reader.get_tensor(name)).all(), name
