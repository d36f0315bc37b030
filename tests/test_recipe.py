"""The recipe switches: each changes what it should, a run with all of them resumes exactly, and
at the defaults training is the 2016 recipe's."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ALL_SWITCHES, tiny_config, tiny_hparams

import cifar_input
import resnet_model
from resnet_cifar import evaluation, recipe, train_state, trained_model, training
from resnet_cifar.errors import UserError


def test_defaults_train_as_the_2016_recipe(subset, tmp_path):
    """Three steps of the trainer against the 2016 step written out here: sparse cross-entropy of
    the logits, momentum 0.9 (not Nesterov), the piecewise rate, no cutout, no weight average."""
    config = tiny_config(tmp_path, subset, {'train_steps': 3, 'lr_boundaries': [2]}, seed=5)
    training.train(config)

    hps = config.hparams
    keras.utils.set_random_seed(5)
    model = resnet_model.ResNet(hps).build_model()
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    kernels = [v for v in model.trainable_variables if 'kernel' in v.path]
    images, labels = cifar_input.load_run_split(config, 'train')
    batches = iter(cifar_input.train_dataset(images, labels, hps.batch_size, seed=5))
    for step in range(3):
        batch_images, batch_labels = next(batches)
        optimizer.learning_rate.assign(0.1 if step < 2 else 0.01)
        with tf.GradientTape() as tape:
            logits = model(batch_images, training=True)
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels, logits=logits)
            loss = tf.reduce_mean(xent) + hps.weight_decay_rate * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    saved = resnet_model.ResNet(hps).build_model()
    tf.train.Checkpoint(model=saved).restore(str(tmp_path / 'ckpt-3')).expect_partial()
    for expected, actual in zip(model.weights, saved.weights, strict=True):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=expected.path)
    assert not train_state.holds(str(tmp_path / 'ckpt-3'), 'averaged_model')


def test_learning_rate_schedule():
    hps = tiny_hparams(lr_boundaries=[10, 20, 30], min_lrn_rate=0.0005)
    rates = [float(recipe.learning_rate(hps, s)) for s in (0, 9, 10, 19, 20, 29, 30, 1000)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0005, 0.0005], rtol=1e-5)
    warm = tiny_hparams(warmup_steps=4)
    np.testing.assert_allclose([float(recipe.learning_rate(warm, s)) for s in (0, 3, 4)], [0.025, 0.1, 0.1], rtol=1e-5)


def test_cosine_decays_from_lrn_rate_after_the_warmup_to_min_lrn_rate():
    hps = tiny_hparams(lr_schedule='cosine', warmup_steps=10, train_steps=110, min_lrn_rate=0.001)

    def cosine(step):
        return 0.001 + 0.5 * (0.1 - 0.001) * (1 + math.cos(math.pi * (step - 10) / 100))

    steps = [0, 4, 9, 10, 35, 60, 85, 110]
    expected = [0.01, 0.05, 0.1] + [cosine(s) for s in steps[3:]]
    np.testing.assert_allclose([float(recipe.learning_rate(hps, s)) for s in steps], expected, rtol=1e-5)
    assert float(recipe.learning_rate(hps, 60)) == pytest.approx(0.0505, rel=1e-4)


def test_label_smoothing_moves_the_targets_towards_uniform():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = np.array([0, 2])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    for smoothing in (0.0, 0.1, 0.3):
        targets = (1 - smoothing) * np.eye(3)[labels] + smoothing / 3
        expected = -(targets * log_probs).sum(1).mean()
        loss = recipe.cross_entropy(tf.constant(logits, tf.float32), tf.constant(labels, tf.int32), smoothing)
        assert float(loss) == pytest.approx(expected, rel=1e-5), smoothing


@pytest.mark.parametrize('optimizer, after_two_steps', [('sgd', 0.81), ('mom', 0.72), ('nesterov', 0.5751)])
def test_optimizer_choices(optimizer, after_two_steps):
    """Two steps on w^2 / 2 from w = 1 at rate 0.1, momentum 0.9. With v = 0.9 v - 0.1 g: momentum
    takes w + v (1, 0.9, 0.72); Nesterov looks ahead, w + 0.9 v - 0.1 g (1, 0.81, 0.5751)."""
    sgd = recipe.make_optimizer(tiny_hparams(optimizer=optimizer, lrn_rate=0.1, momentum=0.9))
    weight = tf.Variable(1.0)
    for _ in range(2):
        sgd.apply_gradients([(tf.convert_to_tensor(weight), weight)])  # the gradient of w^2 / 2 is w
    assert float(weight) == pytest.approx(after_two_steps, rel=1e-5)


@pytest.mark.parametrize('optimizer, slots', [('sgd', 0), ('mom', 1), ('nesterov', 1)])
def test_plain_sgd_has_no_momentum_slots(optimizer, slots):
    """The optimizer's state beyond its step and rate: a momentum slot per weight, none for plain SGD."""
    weights = [tf.Variable(tf.ones([3, 3])), tf.Variable(tf.ones([3]))]
    sgd = recipe.make_optimizer(tiny_hparams(optimizer=optimizer))
    sgd.build(weights)
    per_weight = [v for v in sgd.variables if v.shape.rank]  # the step and the rate are scalars
    assert sorted(tuple(v.shape) for v in per_weight) == sorted([(3,), (3, 3)] * slots)


def test_weight_average_moves_every_weight_and_statistic_towards_the_model():
    hps = tiny_hparams()
    model, average = (resnet_model.ResNet(hps).build_model() for _ in range(2))
    assert len(model.weights) > len(model.trainable_weights)  # batch-norm statistics are averaged too
    before = [w.numpy() for w in average.weights]
    recipe.update_average(average, model, 0.9, step=1000)
    for old, new, target in zip(before, average.weights, model.weights, strict=True):
        np.testing.assert_allclose(new.numpy(), 0.9 * old + 0.1 * target.numpy(), rtol=1e-5, atol=1e-7)
    before = [w.numpy() for w in average.weights]
    recipe.update_average(average, model, 0.9, step=0)  # early on the decay is (1 + step) / (10 + step)
    for old, new, target in zip(before, average.weights, model.weights, strict=True):
        np.testing.assert_allclose(new.numpy(), 0.1 * old + 0.9 * target.numpy(), rtol=1e-5, atol=1e-6)


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror():
    model = resnet_model.ResNet(tiny_hparams()).build_model()
    images = tf.random.stateless_normal([4, 32, 32, 3], [2, 2])
    mirrored = tf.image.flip_left_right(images)
    averaged = recipe.inference_logits(model, images, flip_tta=True).numpy()
    expected = (model(images, training=False) + model(mirrored, training=False)) / 2
    np.testing.assert_allclose(averaged, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recipe.inference_logits(model, mirrored, flip_tta=True), averaged, rtol=1e-5, atol=1e-6)
    assert not np.allclose(recipe.inference_logits(model, images).numpy(), averaged)


@pytest.fixture(scope='module')
def switched_run(subset, tmp_path_factory):
    """A tiny run with every switch on, trained and evaluated 4 steps."""
    config = tiny_config(
        tmp_path_factory.mktemp('switched'), subset, {**ALL_SWITCHES, 'train_steps': 4}, eval_every_steps=4
    )
    training.train(config, evaluate=True)
    return config


def _averaged_model(config, path):
    model = resnet_model.ResNet(config.hparams).build_model()
    tf.train.Checkpoint(averaged_model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return model


def test_eval_predict_and_export_use_the_weight_average_with_flips(switched_run, subset, tmp_path):
    path = f'{switched_run.log_root}/ckpt-4'
    assert train_state.holds(path, 'averaged_model')
    average = _averaged_model(switched_run, path)
    images, labels = cifar_input.load_run_split(switched_run, 'test')
    logits = recipe.inference_logits(average, cifar_input.standardize(images), flip_tta=True)
    expected = float(np.mean(np.argmax(logits, axis=1) == labels.numpy()))
    assert evaluation.score_checkpoint(switched_run, path)['precision'] == pytest.approx(expected)
    assert evaluation.read_history(switched_run.eval_folder)[-1]['precision'] == pytest.approx(expected, abs=1e-6)

    predictions = trained_model.predict([f'{subset}/test_batch.bin'], log_root=switched_run.log_root)
    np.testing.assert_allclose(predictions.probabilities, tf.nn.softmax(logits), rtol=1e-4, atol=1e-5)
    trained_model.export(str(tmp_path / 'export'), switched_run.log_root)
    serve = tf.saved_model.load(str(tmp_path / 'export')).signatures['serving_default']
    served = serve(images=images[:8])['probabilities'].numpy()
    np.testing.assert_allclose(served, predictions.probabilities[:8], rtol=1e-4, atol=1e-5)
    trained = resnet_model.ResNet(switched_run.hparams).build_model()
    tf.train.Checkpoint(model=trained).restore(path).expect_partial()
    assert not np.allclose(trained(cifar_input.standardize(images[:8])), average(cifar_input.standardize(images[:8])))


def test_a_weight_average_cannot_start_halfway(subset, tmp_path):
    without = tiny_config(tmp_path, subset, {'train_steps': 2})
    training.train(without)
    with_average = dataclasses.replace(without, hparams=without.hparams._replace(ema_decay=0.5, train_steps=4))
    with pytest.raises(UserError, match='trained without a weight average') as error:
        training.train(with_average)
    assert error.value.key == 'ema_decay'
