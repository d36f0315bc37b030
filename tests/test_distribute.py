"""tf.distribute and mixed precision: replicas agree with one device (workers: test_worker_faults.py)."""

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TwoReplicas, as_flags, tiny_config, tiny_hparams

import resnet_model
from resnet_cifar import devices, training
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def two_replicas():
    """The measurements of every case of tests/two_replicas.py, which needs a process of its own: one
    process for all of them, TensorFlow's start-up paid once."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tests', 'two_replicas.py')],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize('case', ['one_step', 'fast_steps', 'device_input_steps', 'muon_steps'])
def test_two_replicas_take_the_same_steps_as_one_device(two_replicas, case):
    """The 2016 recipe's step, the airbench94 preset's steps with every switch, steps on batches made
    on the device (each replica its slice), and steps with Muon, on two replicas."""
    measured = two_replicas[case]
    assert measured['replicas'] == 2 and not measured.get('unequal_batches')
    assert measured['update_norm'] > 1e-3, 'the steps must change the weights'
    assert measured['loss_difference'] < 1e-5, measured
    assert measured['weights_difference'] < 1e-5, measured


def test_two_replica_checkpoint_evaluates_the_same_on_one_device(two_replicas):
    measured = two_replicas['checkpoint_across_strategies']
    two, one = measured['two_replicas'], measured['one_device']
    assert two['count'] == one['count'] == 50
    assert two['correct'] == one['correct']
    assert abs(two['loss_sum'] - one['loss_sum']) / one['loss_sum'] < 1e-3


def test_xla_with_several_replicas_is_refused():
    with pytest.raises(UserError) as error:
        devices.refuse_xla_across_replicas(True, TwoReplicas())
    assert as_flags(error.value).startswith('--jit_compile:') and '2 replicas' in str(error.value)
    devices.refuse_xla_across_replicas(True, tf.distribute.get_strategy())  # one replica: allowed


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mixed_precision_trains_with_finite_weights(subset, tmp_path, dtype, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    devices.configure_tensorflow(dtype=dtype)
    try:
        training.train(tiny_config(tmp_path, subset, {'train_steps': 24}, summary_every_steps=1))
    finally:
        devices.configure_tensorflow()
    losses = [float(loss) for loss in re.findall(r'step \d+/24: loss ([\d.]+)', caplog.text)]
    assert len(losses) == 24 and np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.05, losses
    reader = tf.train.load_checkpoint(str(tmp_path / 'ckpt-24'))
    names = reader.get_variable_to_shape_map()
    # Every saved number (the weights are saved under the optimizer's references to them), not the step.
    dtypes = {n: d for n, d in reader.get_variable_to_dtype_map().items() if d.is_floating}
    assert len(dtypes) >= len(resnet_model.network(tiny_hparams()).weights), sorted(dtypes)
    for name, saved_dtype in dtypes.items():
        assert np.isfinite(reader.get_tensor(name)).all(), name
        assert saved_dtype == tf.float32, f'{name}: variables stay float32'
    assert ('optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE' in names) == (dtype == 'float16'), 'loss scaling'
