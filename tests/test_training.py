"""training.train in-process, on the real CIFAR-10 subset: stopping, resuming, summaries, exactness,
divergence, and the refusals that protect a run."""

import dataclasses
import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    ALL_SWITCHES,
    TwoReplicas,
    as_flags,
    checkpoint_steps,
    summary_tags,
    tiny_config,
    tiny_hparams,
    train_stopped_then_resumed,
    with_steps,
)

import cifar_input
from resnet_cifar import run_config, training
from resnet_cifar.errors import UserError


def weights(path):
    reader = tf.train.load_checkpoint(str(path))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith(('model/', 'optimizer/', 'averaged_model/'))
    }


@pytest.fixture(scope='module')
def trained(subset, tmp_path_factory):
    """A tiny run trained 6 steps, then resumed to 10: the run the tests below inspect."""
    config = tiny_config(
        tmp_path_factory.mktemp('run'), subset, {'train_steps': 6}, summary_every_steps=2, checkpoint_every_steps=4
    )
    first = training.train(config)
    after_first = checkpoint_steps(config.log_root)
    second = training.train(with_steps(config, 10, summary_every_steps=2))
    return {'config': config, 'first': first, 'second': second, 'after_first': after_first}


def test_train_stops_at_train_steps_with_a_checkpoint_there(trained):
    assert trained['after_first'] == [4, 6]
    assert trained['first'] == (6, None) and trained['second'] == (10, None)
    saved = json.load(open(os.path.join(trained['config'].log_root, 'hparams.json')))
    assert saved['dataset'] == 'cifar10' and saved['hparams']['num_residual_units'] == 1
    assert saved['hparams']['train_steps'] == 10 and saved['hparams']['batch_size'] == 32


def test_training_summaries_hold_the_original_tags(trained):
    tags = summary_tags(trained['config'].train_folder)
    expected = {'cost', 'xent', 'weight_decay', 'learning_rate', 'Precision', 'images/sec', 'images'}
    assert expected <= tags


def test_a_finished_run_says_once_that_it_is_complete(trained, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    config = trained['config']
    before = sorted(os.listdir(config.log_root))
    assert training.train(with_steps(config, 10)) == (10, None)
    assert caplog.text.count(f'{config.log_root} is complete at step 10') == 1 and 'resumed' not in caplog.text
    assert sorted(os.listdir(config.log_root)) == before


def test_the_progress_line_counts_the_days_remaining(caplog):
    caplog.set_level(logging.INFO, logger='absl')
    remaining = 33 * 3600 + 13  # seconds: one image per step, at one image a second
    hps = tiny_hparams(batch_size=1, train_steps=10 + remaining)
    values = {'cost': 2.5, 'precision': 0.25, 'learning_rate': 0.1}
    training._report(tf.summary.create_noop_writer(), 10, hps, values, images_per_sec=1.0)
    expected = f'step 10/{10 + remaining}: loss 2.5000, precision 0.2500, learning rate 0.10000, 1.0 images/sec'
    assert f'{expected}, 1d 09:00:13 remaining' in caplog.text


def test_default_preset_trains_on_synthetic_data(tmp_path, capfd):
    config = run_config.new_run(
        str(tmp_path), overrides={'train_steps': 2}, data=run_config.DataSettings(data_source='synthetic')
    )
    assert training.train(config).step == 2
    assert 'total_params: 464154' in capfd.readouterr().out
    assert os.path.exists(tmp_path / 'ckpt-2.index')


@pytest.mark.parametrize('switches', [{}, ALL_SWITCHES], ids=['2016 recipe', 'every recipe switch'])
def test_resume_is_exact(subset, tmp_path, monkeypatch, switches):
    """8 steps in one go, or 4, Ctrl-C, and the same call again: the same weights (and weight
    average), bit for bit. The schedule is the 8-step one throughout, as cosine needs."""
    one_go = tiny_config(tmp_path / 'one_go', subset, {**switches, 'train_steps': 8}, seed=3)
    resumed = tiny_config(tmp_path / 'resumed', subset, {**switches, 'train_steps': 8}, seed=3, summary_every_steps=4)
    training.train(one_go)
    assert train_stopped_then_resumed(monkeypatch, resumed) == ((4, 'SIGINT'), (8, None))
    expected, actual = weights(tmp_path / 'one_go' / 'ckpt-8'), weights(tmp_path / 'resumed' / 'ckpt-8')
    assert expected.keys() == actual.keys() and len(expected) > 40
    assert any(name.startswith('averaged_model/') for name in expected) == bool(switches)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.fixture(scope='module')
def short_run(subset, tmp_path_factory):
    """A tiny run with checkpoints at steps 2 and 4; tests copy it before changing it."""
    config = tiny_config(tmp_path_factory.mktemp('short') / 'run', subset, {'train_steps': 4}, checkpoint_every_steps=2)
    training.train(config)
    assert checkpoint_steps(config.log_root) == [2, 4]
    return config


def test_train_steps_below_the_restored_step(short_run, copy_run):
    config = copy_run(short_run)
    with pytest.raises(UserError) as error:
        training.train(with_steps(config, 3))
    assert '--train_steps' in as_flags(error.value) and '3 is below step 4' in str(error.value)


def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(short_run, copy_run):
    config = copy_run(short_run)
    hps = config.hparams._replace(train_steps=50, lrn_rate=1e30, min_lrn_rate=1e30)
    diverging = dataclasses.replace(config, hparams=hps, summary_every_steps=10, checkpoint_every_steps=1)
    with pytest.raises(UserError, match='training diverged at step') as error:
        training.train(diverging)
    message = str(error.value)
    assert 'the last good one is' in message
    diverged = int(message.split('diverged at step ')[1].split(':')[0])
    steps = checkpoint_steps(config.log_root)
    assert steps[-1] == diverged - 1 and f'ckpt-{steps[-1]};' in message
    for step in steps:
        assert all(np.isfinite(w).all() for w in weights(os.path.join(config.log_root, f'ckpt-{step}')).values())


def test_another_network_without_hparams_json_is_refused(short_run, copy_run, subset):
    """Only the checkpoints are left: they still say which run they belong to."""
    config = copy_run(short_run)
    os.remove(os.path.join(config.log_root, 'hparams.json'))
    before = sorted(os.listdir(config.log_root))
    with pytest.raises(UserError) as error:
        training.train(run_config.new_run(config.log_root, preset='resnet110', data_dir=subset))
    for fragment in ('ckpt-4', 'preset resnet32', 'num_residual_units=1', 'resnet110'):
        assert fragment in str(error.value)
    assert sorted(os.listdir(config.log_root)) == before


def test_unwritable_log_root(tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    config = run_config.new_run(str(tmp_path / 'a_file' / 'run'), data=run_config.DataSettings(data_source='synthetic'))
    with pytest.raises(UserError) as error:
        training.train(config)
    line = as_flags(error.value)
    assert line.startswith('--log_root: cannot write') and 'a_file' in line


def test_a_batch_that_does_not_divide_among_replicas_is_refused(tmp_path):
    config = run_config.new_run(
        str(tmp_path / 'run'), overrides={'batch_size': 33}, data=run_config.DataSettings(data_source='synthetic')
    )
    with pytest.raises(UserError, match='batch_size.*33.*2 replicas'):
        training.train(config, TwoReplicas())
    assert not os.path.exists(tmp_path / 'run')


def test_missing_training_files_are_named_with_their_setting(tmp_path):
    data = run_config.DataSettings(train_data_path='/nonexistent/data_batch_*.bin')
    with pytest.raises(UserError) as error:
        training.train(run_config.new_run(str(tmp_path / 'run'), data=data))
    assert as_flags(error.value) == '--train_data_path: no file matches /nonexistent/data_batch_*.bin'
    assert not os.path.exists(tmp_path / 'run'), 'a refused run leaves no folder behind'


def test_sigint_saves_the_current_step_and_returns(subset, tmp_path):
    """Ctrl-C in a Python session: the step is saved and train returns; the handlers are restored."""
    config = tiny_config(tmp_path, subset, {'train_steps': 10000}, checkpoint_every_steps=1000, summary_every_steps=1)
    handler = signal.getsignal(signal.SIGINT)

    def interrupt_once_training_runs():
        """The first summary is flushed inside the loop, where the stop request is listening."""
        deadline = time.time() + 120
        while time.time() < deadline and sum(f.stat().st_size for f in (tmp_path / 'train').glob('*')) < 2000:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_training_runs, daemon=True).start()
    result = training.train(config)
    assert result.stopped_by == 'SIGINT' and 1 <= result.step < 10000
    assert checkpoint_steps(tmp_path) == [result.step]
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_resume_that_would_change_the_training_images_is_refused(short_run, copy_run):
    config = copy_run(short_run)
    before = sorted(os.listdir(config.log_root))
    held_out = dataclasses.replace(config.data, validation_size=500)
    with pytest.raises(UserError) as error:
        training.train(dataclasses.replace(with_steps(config, 6), data=held_out))
    line = as_flags(error.value)
    assert 'ckpt-4 was trained with --validation_size=0' in line and 'resuming with --validation_size=500' in line
    assert sorted(os.listdir(config.log_root)) == before


def test_no_batch_is_read_past_train_steps(subset, tmp_path, monkeypatch):
    """Batches past step 3 raise an error when read: the run must end without reading one."""
    endless = cifar_input.train_dataset

    def exactly_to_step_3(*args, start_step=0, **kwargs):
        batches = endless(*args, start_step=start_step, **kwargs)

        def refuse(images, labels):
            tf.debugging.Assert(tf.reduce_all(labels < 0), ['a batch past train_steps was read'])
            return images, labels

        return batches.take(3 - start_step).concatenate(batches.map(refuse))

    monkeypatch.setattr(cifar_input, 'train_dataset', exactly_to_step_3)
    assert training.train(tiny_config(tmp_path, subset, {'train_steps': 3})).step == 3
