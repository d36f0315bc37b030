"""The training loop's compiled calls of several steps: the 2016 recipe's weights as one step per
call gives them, exact resumes on either input path, a stop honoured within steps_per_call, a stop
request whose reads change nothing, and the fast network under XLA."""

import dataclasses
import logging
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_FAST, checkpoint_steps, tiny_config, train_stopped_then_resumed

import cifar_input
import resnet_model
from resnet_cifar import stop_requests, training


def _weights(path):
    reader = tf.train.load_checkpoint(str(path))
    trained = ('model/', 'optimizer/', 'lookahead/')
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if name.startswith(trained)}


def test_the_default_loop_gives_the_2016_recipes_weights_of_one_step_per_call(subset, tmp_path, caplog):
    """7 steps in the default loop (auto input: tf.data on a CPU; 7 steps in one call) end with the
    weights digest of 7 calls of the training step on the tf.data batches, as the loop was before."""
    caplog.set_level(logging.INFO, logger='absl')
    config = tiny_config(tmp_path, subset, {'train_steps': 7}, seed=2)
    assert config.input == 'auto' and config.steps_per_call >= 7
    training.train(config)
    digest = re.search(r'training done at step 7; weights digest (\w+)', caplog.text).group(1)
    assert 'input: ' not in caplog.text, 'a CPU trains on the tf.data pipeline'

    keras.utils.set_random_seed(2)
    train_op = resnet_model.ResNet(config.hparams).build_train_op()
    images, labels = cifar_input.load_run_split(config, 'train')
    strategy = tf.distribute.get_strategy()
    batches = iter(training.distributed_train_dataset(strategy, images, labels, config.hparams, 2, 0))
    for _ in range(7):
        train_op.train_step(*next(batches))
    assert training.weights_digest(train_op.state.model) == digest


def test_device_input_resumes_exactly(subset, tmp_path, monkeypatch, caplog):
    """8 steps in one go (calls of 3, 3 and 2 steps), or 4 (3 and 1), Ctrl-C and the same call
    again, on batches made on the device with cutout: the same weights to the bit, and not those of
    the tf.data path (another stream of augmentations)."""
    caplog.set_level(logging.INFO, logger='absl')
    overrides = {'train_steps': 8, 'cutout': 8}
    options = {'input': 'device', 'steps_per_call': 3, 'seed': 3}
    one_go = tiny_config(tmp_path / 'one_go', subset, overrides, **options)
    resumed = tiny_config(tmp_path / 'resumed', subset, overrides, summary_every_steps=4, **options)
    tf_data = tiny_config(tmp_path / 'tf_data', subset, overrides, **{**options, 'input': 'tf_data'})
    training.train(one_go)
    training.train(tf_data)
    assert train_stopped_then_resumed(monkeypatch, resumed) == ((4, 'SIGINT'), (8, None))
    expected, actual = _weights(tmp_path / 'one_go' / 'ckpt-8'), _weights(tmp_path / 'resumed' / 'ckpt-8')
    assert expected.keys() == actual.keys() and len(expected) > 40
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert caplog.text.count("input: the training split on each replica's device") == 3
    other = _weights(tmp_path / 'tf_data' / 'ckpt-8')
    assert any(not np.array_equal(other[name], expected[name]) for name in expected)


class _StopAtPoll(stop_requests.StopRequest):
    """A stop request that asks for a stop at its `at`-th poll, and counts the polls."""

    def __init__(self, at):
        self.at, self.polls = at, 0

    def poll(self):
        self.polls += 1
        if self.polls == self.at:
            self.asked = 'SIGTERM'
        return super().poll()


def test_a_stop_is_honoured_within_steps_per_call_and_saved(subset, tmp_path, monkeypatch):
    """Polled once per call of at most 3 steps: asked at the third poll, after 6 steps, the run
    stops there, with ckpt-6, and a resume goes on from it."""
    stop = _StopAtPoll(at=3)
    monkeypatch.setattr(stop_requests, 'stop_request', lambda strategy: stop)
    config = tiny_config(tmp_path, subset, {'train_steps': 100}, steps_per_call=3)
    assert training.train(config) == (6, 'SIGTERM')
    assert stop.polls == 3 and checkpoint_steps(tmp_path) == [6]


class _Handler:
    """Stands in for PreemptionCheckpointHandler: each call is a step to it; the 2nd agrees on a stop."""

    calls = 0

    def save_checkpoint_if_preempted(self):
        self.calls += 1
        if self.calls == 2:
            raise stop_requests._AgreedStop


def test_reading_the_cluster_stop_request_changes_nothing_and_each_poll_is_one_step():
    request = stop_requests.ClusterStopRequest(strategy=None)
    request.asked = request.signal = None
    request.handler = _Handler()
    assert [request.signal for _ in range(3)] == [None] * 3 and request.handler.calls == 0
    assert request.poll() is None and request.handler.calls == 1
    assert request.poll() == 'SIGTERM' and request.handler.calls == 2  # a peer's stop reached this worker
    assert [request.signal for _ in range(3)] == ['SIGTERM'] * 3 and request.poll() == 'SIGTERM'
    assert request.handler.calls == 2, 'once agreed, the handler is asked no more'


@pytest.mark.slow
def test_the_fast_network_trains_the_same_under_xla(subset, tmp_path):
    """The fast preset's network and recipe, narrowed, 6 steps with and without --jit_compile: the
    same weights within float tolerance."""
    overrides = {**TINY_FAST, 'train_steps': 6}
    plain = tiny_config(tmp_path / 'plain', subset, overrides, seed=1)
    training.train(plain)
    training.train(
        dataclasses.replace(plain, log_root=str(tmp_path / 'xla'), train_dir=None, eval_dir=None, jit_compile=True)
    )
    expected, actual = _weights(tmp_path / 'plain' / 'ckpt-6'), _weights(tmp_path / 'xla' / 'ckpt-6')
    assert expected.keys() == actual.keys() and any(name.startswith('lookahead/') for name in expected)
    moved = 0
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-3, atol=1e-4, err_msg=name)
        moved += not np.array_equal(actual[name], expected[name])
    assert moved, 'XLA compiled the step: its float rounding differs somewhere'
