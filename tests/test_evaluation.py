"""evaluation.evaluate_checkpoints in-process, on the real CIFAR-10 subset: whole splits, the
watcher, its report, and damaged or foreign checkpoints."""

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, as_flags, summary_tags, tiny_config, tiny_train_args

import cifar_input
import resnet_model
from resnet_cifar import datasets, evaluation, run_config, training
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def trained(subset, tmp_path_factory):
    """A tiny run of 10 steps with checkpoints at 4, 8 and 10."""
    config = tiny_config(tmp_path_factory.mktemp('run'), subset, {'train_steps': 10}, checkpoint_every_steps=4)
    training.train(config)
    return config


def test_eval_once_covers_the_whole_test_set(trained):
    metrics = evaluation.evaluate_checkpoints(dataclasses.replace(trained, eval_once=True))
    assert metrics == json.load(open(os.path.join(trained.eval_folder, 'metrics.json')))
    assert metrics['num_examples'] == 1017 and metrics['step'] == 10
    assert metrics['checkpoint'].endswith('ckpt-10')
    assert 0.0 <= metrics['precision'] <= metrics['best_precision'] <= 1.0 and metrics['loss'] > 0
    assert {'Precision', 'Best Precision', 'loss', 'confusion_matrix'} <= summary_tags(trained.eval_folder)


def test_eval_reports_per_class_results(trained, tmp_path):
    metrics = evaluation.evaluate_checkpoints(dataclasses.replace(trained, eval_once=True, eval_dir=str(tmp_path)))
    confusion = np.array(metrics['confusion_matrix'])
    assert confusion.shape == (10, 10) and confusion.sum() == metrics['num_examples'] == 1017
    assert np.trace(confusion) / 1017 == pytest.approx(metrics['precision'])
    per_class = metrics['per_class_recall']
    assert list(per_class) == datasets.CLASS_NAMES['cifar10']
    row = confusion[3]
    assert per_class['cat'] == pytest.approx(row[3] / row.sum(), abs=1e-4)
    lines = open(tmp_path / 'metrics.json').read().splitlines()
    assert sum(bool(re.fullmatch(r' *\[\d+(, \d+){9}\],?', line)) for line in lines) == 10, 'a row per line'


def test_a_split_with_a_partial_last_batch_is_scored_by_one_trace_of_the_step(trained):
    """1017 images at 100 a batch end with a batch of 17, which a step traced for the full
    batches' shapes alone would be traced again for."""
    images, labels = cifar_input.load_run_split(trained, 'test')
    scorer = evaluation.SplitScorer(trained.hparams, images, labels, 100, tf.distribute.get_strategy())
    model = resnet_model.ResNet(trained.hparams).build_model()
    for tta in (True, True, False):
        metrics, confusion = scorer(model, tta)
        assert metrics['num_examples'] == confusion.sum() == 1017
    assert {tta: step.experimental_get_tracing_count() for tta, step in scorer.eval_steps.items()} == {
        True: 1,
        False: 1,
    }


def test_continuous_eval_stops_after_the_final_checkpoint(trained, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    watching = dataclasses.replace(trained, eval_dir=str(tmp_path), eval_timeout_secs=60)
    metrics = evaluation.evaluate_checkpoints(watching)
    assert metrics['step'] == 10 and 'eval at step 10' in caplog.text
    assert 'evaluated' not in caplog.text, 'evals of a few seconds print no progress'


def test_train_and_eval_writes_metrics(subset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    config = tiny_config(tmp_path, subset, {'train_steps': 4}, eval_every_steps=2, eval_split='validation')
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, validation_size=100))
    training.train(config, evaluate=True)
    assert caplog.text.count('eval at step') == 2
    metrics = json.load(open(tmp_path / 'eval' / 'validation' / 'metrics.json'))
    assert metrics['num_examples'] == 100 and metrics['step'] == 4 and metrics['split'] == 'validation'
    assert '(100 validation images)' in caplog.text
    history = evaluation.read_history(tmp_path / 'eval' / 'validation')
    assert [(row['step'], row['split']) for row in history] == [(2, 'validation'), (4, 'validation')]
    assert history[-1]['precision'] == pytest.approx(metrics['precision'], abs=1e-6)
    assert history[-1]['loss'] == pytest.approx(metrics['loss'], abs=1e-6)
    assert history[-1]['checkpoint'] == metrics['checkpoint'] and history[0]['checkpoint'].endswith('ckpt-2')
    assert all(row['time'].endswith('Z') for row in history)
    assert not (tmp_path / 'eval' / 'history.csv').exists()


def test_each_split_keeps_its_own_best_and_metrics(trained, tmp_path):
    eval_dir = str(tmp_path / 'eval')
    os.makedirs(eval_dir)
    with open(os.path.join(eval_dir, 'metrics.json'), 'w') as f:
        json.dump({'best_precision': 0.99}, f)  # an earlier test eval's best, above anything ResNet-8 reaches here
    test = evaluation.evaluate_checkpoints(dataclasses.replace(trained, eval_once=True, eval_dir=eval_dir))
    assert test['best_precision'] == 0.99
    with_validation = dataclasses.replace(trained.data, validation_size=500)
    validation = evaluation.evaluate_checkpoints(
        dataclasses.replace(trained, data=with_validation, eval_once=True, eval_dir=eval_dir, eval_split='validation')
    )
    assert test['split'] == 'test' and validation['split'] == 'validation'
    assert validation['best_precision'] == validation['precision'] < 0.99, 'the best of the validation split alone'
    assert json.load(open(tmp_path / 'eval' / 'metrics.json')) == test, 'the test metrics stay as they were'
    assert json.load(open(tmp_path / 'eval' / 'validation' / 'metrics.json')) == validation
    assert validation['num_examples'] == 500 and test['num_examples'] == 1017


def test_eval_without_a_checkpoint_gives_up_after_the_timeout(tmp_path):
    config = run_config.new_run(
        str(tmp_path), data=run_config.DataSettings(data_source='synthetic'), eval_timeout_secs=1
    )
    with pytest.raises(UserError) as error:
        evaluation.evaluate_checkpoints(config)
    line = as_flags(error.value)
    assert 'no usable checkpoint appeared' in line and '--eval_timeout_secs' in line


def test_corrupted_newest_checkpoint_is_skipped_by_eval_and_refused_by_train(subset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    config = tiny_config(tmp_path, subset, {'train_steps': 4}, checkpoint_every_steps=2, eval_once=True)
    training.train(config)
    data = tmp_path / 'ckpt-4.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    assert evaluation.evaluate_checkpoints(config)['step'] == 2
    assert re.search(r'skipping .*ckpt-4 is unreadable', caplog.text), caplog.text

    with pytest.raises(UserError) as error:
        training.train(dataclasses.replace(config, hparams=config.hparams._replace(train_steps=6)))
    for fragment in ('cannot resume', 'ckpt-4', 'ckpt-2 is usable', 'move the files of ckpt-4.* away'):
        assert fragment in str(error.value)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.index')) == ['ckpt-2.index', 'ckpt-4.index']


def test_eval_of_another_dataset_is_refused_before_writing(trained):
    before = sorted(os.listdir(trained.log_root))
    other = run_config.new_run(
        trained.log_root, dataset='cifar100', data=run_config.DataSettings(data_source='synthetic'), eval_once=True
    )
    with pytest.raises(UserError) as error:
        evaluation.evaluate_checkpoints(other)
    for fragment in ('ckpt-10', 'on cifar10', 'not preset resnet32 on cifar100'):
        assert fragment in str(error.value)
    assert sorted(os.listdir(trained.log_root)) == before


@pytest.mark.multiprocess
def test_eval_beside_training_sees_each_checkpoint_once_and_ends_with_it(subset, tmp_path, caplog):
    """The trainer in another process, as a user runs the two; the evaluator here."""
    caplog.set_level(logging.INFO, logger='absl')
    log_root = tmp_path / 'run'
    args = tiny_train_args(subset, log_root, '--train_steps=12', '--checkpoint_every_steps=2', '--keep_checkpoints=10')
    log = open(tmp_path / 'trainer.log', 'w')
    trainer = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'resnet_main.py'), *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    evaluation.evaluate_checkpoints(tiny_config(log_root, subset, {'train_steps': 12}, eval_timeout_secs=300))
    assert trainer.wait(timeout=300) == 0
    steps = [int(s) for s in re.findall(r'eval at step (\d+):', caplog.text)]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 12, steps
    assert 'skipping' not in caplog.text


def test_eval_once_without_a_checkpoint_fails_at_once_and_writes_nothing(tmp_path):
    config = run_config.new_run(str(tmp_path), data=run_config.DataSettings(data_source='synthetic'), eval_once=True)
    start = time.time()
    with pytest.raises(UserError, match='no checkpoint in') as error:
        evaluation.evaluate_checkpoints(config)
    assert time.time() - start < 30 and as_flags(error.value).startswith('--log_root: ')
    assert not os.listdir(tmp_path)
