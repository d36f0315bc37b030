"""A run folder written by the previous version (tests/data/old_run_v1, see tests/data/README.md) still
evaluates as it did, resumes, predicts and exports with this one: new keys must default to the old behaviour."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, checkpoint_steps, with_steps

import cifar_input
from resnet_cifar import evaluation, run_folder, trained_model, training
from resnet_cifar.train_state import saved_key

OLD_RUN = os.path.join(ROOT, 'tests', 'data', 'old_run_v1')
ONE_IMAGE = 1 / 1017  # a float difference between CPUs may flip one near-tie prediction


@pytest.fixture
def old_run(subset, tmp_path, monkeypatch):
    """A copy of the old run, so the checkout's stays as written. Its data paths are relative
    (../shared/data/cifar10-subset/...), as the old version was given them: they lead to the
    subset from the checkout, the working directory here."""
    monkeypatch.chdir(ROOT)
    shutil.copytree(OLD_RUN, tmp_path / 'old_run_v1')
    return str(tmp_path / 'old_run_v1')


def _old_metrics(log_root):
    with open(os.path.join(log_root, 'eval', 'metrics.json')) as f:
        return json.load(f)


def test_an_old_run_evaluates_as_the_old_version_did(old_run):
    old = _old_metrics(old_run)
    config = dataclasses.replace(run_folder.read_config(old_run), eval_once=True)
    metrics = evaluation.evaluate_checkpoints(config)
    assert metrics['step'] == old['step'] == 4
    assert metrics['num_examples'] == old['num_examples'] == 1017
    assert metrics['precision'] == pytest.approx(old['precision'], abs=ONE_IMAGE)
    assert metrics['loss'] == pytest.approx(old['loss'], rel=1e-4)
    assert metrics['best_precision'] >= old['best_precision'], 'the old best is read and kept'
    history = evaluation.read_history(config.eval_folder)
    assert [row['step'] for row in history] == [2, 4, 4], 'the old history.csv is read and added to'
    assert history[-1]['precision'] == pytest.approx(metrics['precision'], abs=1e-6)


def test_an_old_run_resumes_where_it_stopped(old_run, tmp_path, monkeypatch):
    """Its ckpt-4 is taken up whole: right after the restore, every weight, momentum slot and the
    step are the numbers the old version saved, to the bit. Two more steps then land where this
    version's own run of the same recipe does in one go of 6 steps (at TensorFlow's default thread
    count, which the old run was made with: another count rounds differently)."""
    restored = str(tmp_path / 'restored')
    resume = training._resume

    def resume_and_write(config, checkpoint, saved_config, resume_from):
        resume(config, checkpoint, saved_config, resume_from)
        checkpoint.write(restored)

    monkeypatch.setattr(training, '_resume', resume_and_write)
    resumed = with_steps(run_folder.read_config(old_run), 6)
    assert training.train(resumed) == (6, None)
    assert checkpoint_steps(old_run) == [4, 6]
    with open(os.path.join(old_run, 'hparams.json')) as f:
        assert json.load(f)['hparams']['train_steps'] == 6

    saved, taken_up = tf.train.load_checkpoint(os.path.join(old_run, 'ckpt-4')), tf.train.load_checkpoint(restored)
    names = [name for name in saved.get_variable_to_shape_map() if name.startswith(('model/', 'optimizer/', 'step/'))]
    assert len(names) > 40 and set(names) <= set(taken_up.get_variable_to_shape_map())
    for name in names:
        np.testing.assert_array_equal(taken_up.get_tensor(name), saved.get_tensor(name), err_msg=name)
    assert taken_up.get_tensor(saved_key('step')) == 4

    one_go_root = str(tmp_path / 'one_go')
    one_go = dataclasses.replace(resumed, log_root=one_go_root, train_dir=None, eval_dir=None)
    training.train(one_go)
    expected, actual = tf.train.load_checkpoint(f'{one_go_root}/ckpt-6'), tf.train.load_checkpoint(f'{old_run}/ckpt-6')
    for name in names:
        np.testing.assert_allclose(
            actual.get_tensor(name), expected.get_tensor(name), rtol=1e-3, atol=1e-5, err_msg=name
        )


def test_an_old_run_predicts_and_exports(old_run, subset, tmp_path):
    config = run_folder.read_config(old_run)
    images, labels = cifar_input.load_run_split(config, 'test')
    predictions = trained_model.predict([os.path.join(subset, 'test_batch.bin')], log_root=old_run)
    precision = np.mean(np.argmax(predictions.probabilities, axis=1) == labels.numpy())
    assert precision == pytest.approx(_old_metrics(old_run)['precision'], abs=ONE_IMAGE)

    export_dir = str(tmp_path / 'exported')
    trained_model.export(export_dir, old_run)
    served = tf.saved_model.load(export_dir).signatures['serving_default'](images=images[:8])
    np.testing.assert_allclose(served['probabilities'].numpy(), predictions.probabilities[:8], rtol=1e-4, atol=1e-5)
