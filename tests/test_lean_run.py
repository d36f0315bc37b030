"""What a training run spends besides training: evals within it with one view per image
(intermediate_tta=false), and a resume that restores the whitening rather than computing it."""

import logging
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, TINY_FAST, tiny_config, with_steps

import cifar_input
from resnet_cifar import evaluation, fast_network, recipe, restore, run_config, training


def _precision(config, checkpoint, tta):
    model = restore.restore_model(checkpoint, config.hparams, tf.distribute.get_strategy())
    images, labels = cifar_input.load_run_split(config, 'validation')
    logits = recipe.inference_logits(model, cifar_input.standardize(images), tta, tta)
    return float(np.mean(np.argmax(logits, axis=1) == labels.numpy()))


def test_evals_within_training_take_one_view_until_the_last(subset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    overrides = {**TINY, **TINY_FAST, 'train_steps': 4, 'intermediate_tta': False}
    data = run_config.data_settings('cifar10', subset, validation_size=100)
    config = run_config.new_run(
        str(tmp_path),
        overrides=overrides,
        data=data,
        eval_split='validation',
        eval_every_steps=2,
        checkpoint_every_steps=2,
    )
    training.train(config, evaluate=True)
    lines = re.findall(r'eval at step (\d): loss [\d.]+, precision ([\d.]+), .*images(.*)\)', caplog.text)
    assert [(step, views) for step, _, views in lines] == [
        ('2', ', one view: no test-time augmentation'),
        ('4', ', with test-time augmentation'),
    ]
    assert float(lines[0][1]) == pytest.approx(_precision(config, str(tmp_path / 'ckpt-2'), False), abs=1e-4)
    assert float(lines[1][1]) == pytest.approx(_precision(config, str(tmp_path / 'ckpt-4'), True), abs=1e-4)
    assert [row['step'] for row in evaluation.read_history(evaluation.report_dir(config))] == [2, 4]


def test_a_resume_restores_the_whitening_without_computing_it(subset, tmp_path, monkeypatch):
    config = tiny_config(tmp_path, subset, {**TINY_FAST, 'train_steps': 3})
    training.train(config)
    expected = fast_network.whitening_kernel(cifar_input.load_run_split(config, 'train')[0])

    def not_again(images):
        raise AssertionError('a resume computed the whitening again')

    monkeypatch.setattr(fast_network, 'whitening_kernel', not_again)
    assert training.train(with_steps(config, 4)).step == 4
    model = restore.restore_model(str(tmp_path / 'ckpt-4'), config.hparams, tf.distribute.get_strategy())
    np.testing.assert_array_equal(model.get_layer(fast_network.WHITEN).kernel.numpy(), expected)
