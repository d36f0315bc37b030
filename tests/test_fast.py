"""The speed-run switches (docs/fast.md): each does what it says, a tiny airbench run with all of
them on resumes exactly and is what eval, predict and export use, and the preset is valid."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_FAST, tiny_config, tiny_hparams, train_stopped_then_resumed

import cifar_input
import resnet_model
from resnet_cifar import (
    devices,
    evaluation,
    fast_network,
    portable_model,
    presets,
    recipe,
    run_config,
    trained_model,
    training,
)
from resnet_cifar.errors import UserError


def test_whitening_kernel_whitens_the_patches_as_their_eigendecomposition_says():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    standardized = cifar_input.standardize(images).numpy().astype(np.float64)
    patches = np.stack(
        [standardized[:, i : i + 2, j : j + 2, :].reshape(6, 12) for i in range(31) for j in range(31)], axis=1
    ).reshape(-1, 12)
    eigenvalues, eigenvectors = np.linalg.eigh(patches.T @ patches / len(patches))
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]

    kernel = fast_network.whitening_kernel(tf.constant(images)).reshape(12, 24)
    np.testing.assert_array_equal(kernel[:, 12:], -kernel[:, :12])
    signs = np.sign(np.sum(kernel[:, :12] * eigenvectors, axis=0))
    expected = eigenvectors / np.sqrt(eigenvalues + fast_network.WHITEN_EPSILON)
    np.testing.assert_allclose(kernel[:, :12] * signs, expected, rtol=1e-4, atol=1e-4)
    whitened = patches @ kernel[:, :12]
    covariance = whitened.T @ whitened / len(patches)
    np.testing.assert_allclose(
        covariance, np.diag(eigenvalues / (eigenvalues + fast_network.WHITEN_EPSILON)), atol=1e-3
    )


def test_dirac_init_makes_each_conv_pass_its_first_channels_through():
    keras.utils.set_random_seed(0)
    model = resnet_model.ResNet(tiny_hparams(**TINY_FAST)).build_model()
    conv = model.get_layer('group_2_conv2')
    x = tf.random.normal([2, 7, 7, conv.kernel.shape[2]])
    np.testing.assert_allclose(conv(x).numpy()[..., : x.shape[-1]], x.numpy(), atol=1e-6)
    wider = model.get_layer('group_2_conv1')  # 8 channels in, 16 out: 8 pass through, 8 stay random
    assert np.count_nonzero(wider.kernel.numpy()[..., 8:]) == wider.kernel.numpy()[..., 8:].size
    assert not np.any(model.get_layer(fast_network.WHITEN).kernel.numpy())  # set from the images, not dirac


def test_the_resnet_takes_the_whitening_stem_and_dirac_init_too():
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    kernel = fast_network.whitening_kernel(tf.constant(images))
    hps = tiny_hparams(whiten=True, dirac_init=True)
    model = resnet_model.ResNet(hps, whitening=kernel).build_model()
    assert model(cifar_input.standardize(images)).shape == (4, 10)
    np.testing.assert_array_equal(model.get_layer(fast_network.WHITEN).kernel.numpy(), kernel)
    init_conv = model.get_layer('init_conv').kernel.numpy()  # 24 whitened channels in, 16 out: all identity
    np.testing.assert_array_equal(init_conv, fast_network.dirac(np.zeros_like(init_conv)))


def test_triangular_schedule_with_a_warmup_from_a_fraction():
    hps = tiny_hparams(
        lr_schedule='triangular', warmup_steps=4, warmup_from=0.2, train_steps=10, lrn_rate=1.0, min_lrn_rate=0.1
    )
    rates = [float(recipe.learning_rate(hps, step)) for step in range(11)]
    expected = [0.4, 0.6, 0.8, 1.0, 1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_decoupled_rate_and_decay_are_per_1024_examples():
    hps = tiny_hparams(decoupled=True, batch_size=256, optimizer='nesterov', momentum=0.85, lrn_rate=11.5)
    scale = 256 / (1024 * (1 + 1 / 0.15))
    assert float(recipe.learning_rate(hps, 0)) == pytest.approx(11.5 * scale, rel=1e-6)  # piecewise, step 0
    hps = tiny_hparams(**{**TINY_FAST, 'weight_decay_rate': 0.02})
    model = resnet_model.ResNet(hps).build_model()
    offsets = {id(v) for v in recipe.batch_norm_offsets(model)}
    decayed = [v for v in model.trainable_variables if v.path != 'whiten/kernel']
    expected = sum(np.sum(v.numpy() ** 2) / 2 / (64.0 if id(v) in offsets else 1.0) for v in decayed) * 0.02 / 11.5
    assert float(recipe.decoupled_weight_decay(model, hps)) == pytest.approx(expected, rel=1e-5)
    assert len(offsets) == 6 and len(decayed) == len(model.trainable_variables) - 1


def test_gradients_of_batch_norm_offsets_are_scaled_and_the_whitening_stem_freezes():
    hps = tiny_hparams(**TINY_FAST)
    model = resnet_model.ResNet(hps).build_model()
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    for step, bias_scale in ((2, 1.0), (3, 0.0)):
        scaled_grads = recipe.scale_gradients(grads, model, hps, step)
        scaled = {v.path: grad for v, grad in zip(model.trainable_variables, scaled_grads, strict=True)}
        assert float(tf.reduce_max(scaled['group_1_bn1/beta'])) == 64.0
        assert float(tf.reduce_max(scaled['group_1_conv1/kernel'])) == 1.0
        assert float(tf.reduce_max(tf.abs(scaled['whiten/kernel']))) == 0.0
        assert float(tf.reduce_max(scaled['whiten/bias'])) == bias_scale
    assert recipe.scale_gradients(grads, model, tiny_hparams(), 0) is grads


def test_batch_norm_without_scale_has_no_gamma_and_matches_keras():
    model = resnet_model.ResNet(tiny_hparams(bn_scale=False)).build_model()
    assert not any(v.path.endswith('gamma') for v in model.weights)
    fused = model.get_layer('unit_1_0_2_bn')
    plain = keras.layers.BatchNormalization.from_config({**fused.get_config(), 'name': 'plain'})
    x = tf.random.normal([4, 8, 8, fused.beta.shape[0]], seed=1)
    plain.build(x.shape)
    plain.set_weights(fused.get_weights())
    for training_mode in (True, False):
        np.testing.assert_allclose(fused(x, training=training_mode), plain(x, training=training_mode), atol=1e-4)


def test_logit_scale_multiplies_the_logits():
    images = tf.random.normal([2, 32, 32, 3], seed=2)
    keras.utils.set_random_seed(0)
    plain = resnet_model.ResNet(tiny_hparams()).build_model()(images)
    keras.utils.set_random_seed(0)
    scaled = resnet_model.ResNet(tiny_hparams(logit_scale=0.125)).build_model()(images)
    np.testing.assert_allclose(scaled, 0.125 * plain, rtol=1e-5)


def _record_orientations(alternating_flip, epochs=3):
    """Per epoch, whether each record comes out mirrored: records are told apart by their label."""
    count = 16
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))  # dark left, bright right
    images = tf.constant(np.stack([ramp] * count))
    batches = cifar_input.train_dataset(
        images, tf.range(count), count, seed=4, translate=0, alternating_flip=alternating_flip
    )
    orientations = []
    for batch_images, batch_labels in batches.take(epochs):
        mirrored = batch_images.numpy()[:, 0, 0, 0] > batch_images.numpy()[:, 0, -1, 0]
        orientations.append(mirrored[np.argsort(batch_labels.numpy())])
    return orientations


def test_alternating_flip_mirrors_every_image_the_other_way_each_epoch():
    first, second, third = _record_orientations(alternating_flip=True)
    assert 0 < first.sum() < len(first)  # epoch 0: a coin per image
    np.testing.assert_array_equal(second, ~first)
    np.testing.assert_array_equal(third, first)
    random = _record_orientations(alternating_flip=False)
    assert not np.array_equal(random[1], ~random[0])


def test_reflect_padded_translation_moves_the_image_and_fills_in_its_reflection():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)], mode='reflect')
    windows = [padded[i : i + 32, j : j + 32] for i in range(5) for j in range(5)]
    windows += [window[:, ::-1] for window in windows]
    for seed in range(4):
        moved = cifar_input.augment(tf.constant(image), tf.constant([seed, 0], tf.int64), pad=2, reflect=True).numpy()
        assert any(np.array_equal(moved, window) for window in windows)


def test_translate_tta_averages_the_six_views_as_airbench():
    keras.utils.set_random_seed(0)
    model = resnet_model.ResNet(tiny_hparams()).build_model()
    images = tf.random.normal([2, 32, 32, 3], seed=3)
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='REFLECT')
    moved = [images, padded[:, :32, :32], padded[:, 2:, 2:]]
    views = [(model(x) + model(x[:, :, ::-1])) / 2 for x in moved]
    expected = views[0] / 2 + views[1] / 4 + views[2] / 4
    actual = recipe.inference_logits(model, images, flip_tta=True, translate_tta=True)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    without_flips = model(images) / 2 + (model(moved[1]) + model(moved[2])) / 4
    np.testing.assert_allclose(recipe.inference_logits(model, images, translate_tta=True), without_flips, rtol=1e-5)


def test_lookahead_moves_its_average_and_copies_it_into_the_weights():
    hps = tiny_hparams(lookahead_every=2, lookahead_start=3, lookahead_decay=0.9, train_steps=9)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    lookahead = recipe.Lookahead(model)
    initial = float(model.weights[0][0, 0])

    def step(step, weights):
        model.set_weights([np.full_like(w, weights) for w in model.get_weights()])
        lookahead.update(model, hps, tf.constant(step, tf.int64))
        return float(lookahead.average[0][0, 0]), float(model.weights[0][0, 0])

    assert step(2, 5.0) == (initial, 5.0)  # before lookahead_start: nothing
    assert step(4, 7.0) == (7.0, 7.0)  # the first update starts the average at the weights
    assert step(5, 9.0) == (7.0, 9.0)  # not a multiple of lookahead_every
    decay = 0.9**2 * (6 / 9) ** 3
    expected = 7.0 + (1 - decay) * (11.0 - 7.0)
    assert step(6, 11.0) == pytest.approx((expected, expected))
    decay = 0.9**2 * 1.0
    assert step(9, 13.0) == pytest.approx((expected + (1 - decay) * (13.0 - expected),) * 2)  # the last step


@pytest.mark.parametrize(
    'values, key',
    [
        ({'network': 'vgg'}, 'network'),
        ({'network': 'airbench', 'num_residual_units': 2}, 'num_residual_units'),
        ({**TINY_FAST, 'filters': [16, 8, 16, 16]}, 'filters'),
        ({'bn_bias_lr': 0}, 'bn_bias_lr'),
        ({'lr_schedule': 'triangular', 'warmup_steps': 10, 'train_steps': 10}, 'warmup_steps'),
        ({'warmup_from': 1.0}, 'warmup_from'),
        ({'lookahead_every': -1}, 'lookahead_every'),
        ({'lookahead_decay': 1.0}, 'lookahead_decay'),
        ({'translate': 17}, 'translate'),
        ({'logit_scale': 0}, 'logit_scale'),
        ({'whiten_bias_steps': -1}, 'whiten_bias_steps'),
    ],
)
def test_bad_switches_are_refused_naming_the_key(values, key):
    with pytest.raises(UserError, match=f'hparam {key}:'):
        tiny_hparams(**values)


def test_the_airbench94_preset_is_airbench_with_every_switch_and_fast_adds_muon():
    hps = presets.build_hparams('airbench94')
    assert resnet_model.network_name(hps) == 'airbench (64/256/256)'
    switches = ('whiten', 'dirac_init', 'decoupled', 'alternating_flip', 'reflect_pad', 'flip_tta', 'translate_tta')
    assert all(getattr(hps, switch) for switch in switches) and not hps.bn_scale
    assert hps.lr_schedule == 'triangular' and hps.bn_bias_lr > 1 and hps.lookahead_every and hps.logit_scale < 1
    fast = presets.build_hparams('fast')
    assert fast.optimizer == 'muon' and not fast.lookahead_every and not fast.intermediate_tta
    assert fast.network == 'airbench' and all(getattr(fast, switch) for switch in switches)


def _weights(path):
    reader = tf.train.load_checkpoint(str(path))
    trained = ('model/', 'optimizer/', 'averaged_model/', 'lookahead/')
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if name.startswith(trained)}


@pytest.mark.slow
def test_a_run_with_every_switch_resumes_exactly_and_serves_what_it_trained(subset, tmp_path, monkeypatch):
    """8 steps in one go, or 5, Ctrl-C, and the same call again: the same checkpoint, bit for bit,
    the lookahead average (between two of its updates at the stop) included. The whitening is the
    training images', and eval and predict use it."""
    switches = {**TINY_FAST, 'ema_decay': 0.9, 'cutout': 8, 'train_steps': 8}
    one_go = tiny_config(tmp_path / 'one_go', subset, switches, seed=3)
    resumed = tiny_config(tmp_path / 'resumed', subset, switches, seed=3, summary_every_steps=5)
    training.train(one_go)
    assert train_stopped_then_resumed(monkeypatch, resumed) == ((5, 'SIGINT'), (8, None))
    expected, actual = _weights(tmp_path / 'one_go' / 'ckpt-8'), _weights(tmp_path / 'resumed' / 'ckpt-8')
    assert expected.keys() == actual.keys() and any(name.startswith('lookahead/') for name in expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)

    path = str(tmp_path / 'one_go' / 'ckpt-8')
    trained = resnet_model.ResNet(one_go.hparams).build_model()
    tf.train.Checkpoint(model=trained).restore(path).expect_partial()
    whitening = fast_network.whitening_kernel(cifar_input.load_run_split(one_go, 'train')[0])
    np.testing.assert_array_equal(trained.get_layer(fast_network.WHITEN).kernel.numpy(), whitening)  # frozen
    model, config = trained_model.load(checkpoint=path)  # the weight average: within its rounding
    np.testing.assert_allclose(model.get_layer(fast_network.WHITEN).kernel.numpy(), whitening, rtol=1e-6)
    test_images, test_labels = cifar_input.load_run_split(config, 'test')
    logits = recipe.inference_logits(model, cifar_input.standardize(test_images), True, True)
    expected_precision = float(np.mean(np.argmax(logits, axis=1) == test_labels.numpy()))
    assert evaluation.score_checkpoint(one_go, path)['precision'] == pytest.approx(expected_precision)
    predictions = trained_model.predict([f'{subset}/test_batch.bin'], checkpoint=path)
    np.testing.assert_allclose(predictions.probabilities, tf.nn.softmax(logits), rtol=1e-4, atol=1e-5)


def test_the_fast_preset_trains_on_cifar100_in_bfloat16(tmp_path):
    """The preset itself, narrowed to a few steps: 100 classes, mixed bfloat16, synthetic images.
    Its variables stay float32 and finite, the frozen whitening stays the training images', eval
    scores the run and its portable model (what export writes) gives 100 probabilities."""
    overrides = {'filters': [24, 8, 16, 16], 'batch_size': 32, 'train_steps': 4, 'warmup_steps': 1}
    overrides.update(whiten_bias_steps=2, lookahead_every=2, lookahead_start=2)
    synthetic = run_config.DataSettings(data_source='synthetic')
    config = run_config.new_run(str(tmp_path), 'fast', 'cifar100', overrides, data=synthetic, eval_once=True)
    devices.configure_tensorflow(dtype='bfloat16')
    try:
        training.train(config)
        metrics = evaluation.evaluate_checkpoints(config)
    finally:
        devices.configure_tensorflow()
    reader = tf.train.load_checkpoint(str(tmp_path / 'ckpt-4'))
    weights = {n: d for n, d in reader.get_variable_to_dtype_map().items() if n.startswith(('model/', 'lookahead/'))}
    assert any(n.startswith('lookahead/') for n in weights) and len(weights) > 20, sorted(weights)
    for name, dtype in weights.items():
        assert dtype == tf.float32 and np.isfinite(reader.get_tensor(name)).all(), name
    model, _ = trained_model.load(config.log_root)
    whitening = fast_network.whitening_kernel(cifar_input.load_run_split(config, 'train')[0])
    np.testing.assert_allclose(model.get_layer(fast_network.WHITEN).kernel.numpy(), whitening, rtol=1e-6)
    test_images, test_labels = cifar_input.load_run_split(config, 'test')
    probabilities = portable_model.build(model, config.hparams)(test_images)['probabilities'].numpy()
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1, rtol=1e-5)
    assert probabilities.shape == (len(test_labels), 100)
    # eval scored the run: its precision is the share of test images the trained network gets right
    # (the portable model computes in float32, eval in bfloat16: a few near ties may differ)
    assert metrics['step'] == 4 and metrics['num_examples'] == len(test_labels)
    right = np.mean(probabilities.argmax(axis=1) == np.asarray(test_labels))
    assert abs(metrics['precision'] - right) <= 3 / len(test_labels), (metrics['precision'], right)
