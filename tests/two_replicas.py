"""Checks that need two logical CPU devices, which TensorFlow allows only before its runtime starts,
so tests/test_distribute.py runs this file in a fresh process, once for every case:

    python tests/two_replicas.py [CASE ...]    # prints one JSON object: each case's measurements
"""

import functools
import json
import os
import sys
import tempfile

import numpy as np

import resnet_cifar

resnet_cifar.setup(command=True)  # TensorFlow started as a command starts it; its runtime not yet

# isort: split
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import cifar_input  # noqa: E402
import resnet_model  # noqa: E402
from resnet_cifar import device_input, fast_network, training  # noqa: E402
from resnet_cifar.hparams_check import make_hparams  # noqa: E402
from resnet_cifar.run_config import build_hparams  # noqa: E402

CPU = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)
HPS = make_hparams({'num_residual_units': 1, 'batch_size': 16})
NARROW = {'filters': [24, 8, 16, 16], 'batch_size': 16, 'train_steps': 4, 'whiten_bias_steps': 2}
FAST = build_hparams('airbench94', {**NARROW, 'warmup_steps': 1, 'lookahead_every': 2, 'lookahead_start': 1})
MUON = build_hparams('fast', NARROW)


def _batch(size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
    return tf.image.per_image_standardization(images), tf.constant(rng.integers(0, 10, size, dtype=np.int32))


def _relative_difference(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _flat(model):
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


@functools.cache
def _two_replicas():
    """One strategy for every case: collectives of two strategies in one process can share instance
    keys, and then mismatch."""
    return tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])


def _distributed(strategy, dataset):
    return next(iter(strategy.experimental_distribute_dataset(dataset)))


def one_step():
    """One training step on a global batch: two replicas with synchronized batch norm vs one device."""
    return _steps_compared(HPS, 1)


def fast_steps():
    """Three steps of the airbench94 preset, narrowed: the whitening stem, the batch-norm bias rate, the
    decoupled decay, and the lookahead average updated and copied back across replicas."""
    return _steps_compared(FAST, 3)


def muon_steps():
    """Three steps of the fast preset, narrowed: Muon for the conv kernels (their momentum and
    orthogonalized updates) and SGD for the rest, across replicas."""
    return _steps_compared(MUON, 3)


def _steps_compared(hps, steps):
    keras.utils.set_random_seed(0)
    single = resnet_model.ResNet(hps, sync_batch_norm=True).build_train_op()
    single_model = single.state.model
    if hps.whiten:
        pixels = np.random.default_rng(5).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
        fast_network.set_whitening(single_model, fast_network.whitening_kernel(pixels))
    initial = _flat(single_model)
    strategy = _two_replicas()
    mirrored = resnet_model.ResNet(hps, sync_batch_norm=True).build_train_op(strategy)
    mirrored.state.model.set_weights(single_model.get_weights())

    for step in range(steps):
        images, labels = _batch(hps.batch_size, seed=step)
        expected = single.train_step(images, labels)
        actual = mirrored.train_step(*_distributed(strategy, tf.data.Dataset.from_tensors((images, labels))))
    return {
        'replicas': strategy.num_replicas_in_sync,
        'loss': [float(expected['cost']), float(actual['cost'])],
        'loss_difference': _relative_difference(actual['cost'].numpy(), expected['cost'].numpy()),
        'weights_difference': _relative_difference(_flat(mirrored.state.model), _flat(single_model)),
        'update_norm': float(np.linalg.norm(_flat(single_model) - initial)),
    }


def device_input_steps():
    """Batches made on the device (cutout, alternating flips): each of two replicas makes its slice
    of the global batch, which one device makes whole, the same to the bit over three epochs; and
    the training step on them (with cutout), at step 4 (the third epoch), is one device's."""
    rng = np.random.default_rng(3)
    images = tf.constant(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, 40, dtype=np.int32))
    strategy = _two_replicas()

    def made_on_each(hps):
        one = device_input.DeviceInput(tf.distribute.get_strategy(), images, labels, hps, 5)
        return one, device_input.DeviceInput(strategy, images, labels, hps, 5)

    one, two = made_on_each(HPS._replace(cutout=8, alternating_flip=True))
    sliced_batch = tf.function(two.batch)
    unequal = 0
    for step in tf.range(7, dtype=tf.int64):
        whole, sliced = one.batch(step), sliced_batch(step)
        for tensor, slices in zip(whole, sliced, strict=True):
            unequal += not np.array_equal(tensor, np.concatenate(strategy.experimental_local_results(slices)))

    hps = HPS._replace(cutout=8)
    one, two = made_on_each(hps)

    keras.utils.set_random_seed(0)
    single_op = resnet_model.ResNet(hps, sync_batch_norm=True).build_train_op()
    single = single_op.state.model
    initial = _flat(single)
    mirrored_op = resnet_model.ResNet(hps, sync_batch_norm=True).build_train_op(strategy)
    mirrored = mirrored_op.state.model
    mirrored.set_weights(single.get_weights())
    for train_op in (single_op, mirrored_op):
        train_op.state.step.assign(4)
    expected, _ = training.compiled_steps(single_op, one.batch)(tf.constant(1, tf.int64))
    actual, _ = training.compiled_steps(mirrored_op, two.batch)(tf.constant(1, tf.int64))
    return {
        'replicas': strategy.num_replicas_in_sync,
        'unequal_batches': unequal,
        'loss': [float(expected['cost']), float(actual['cost'])],
        'loss_difference': _relative_difference(actual['cost'].numpy(), expected['cost'].numpy()),
        'weights_difference': _relative_difference(_flat(mirrored), _flat(single)),
        'update_norm': float(np.linalg.norm(_flat(single) - initial)),
    }


def checkpoint_across_strategies():
    """A two-replica checkpoint evaluated under two replicas and restored into one device."""
    rng = np.random.default_rng(1)
    images = tf.constant(rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, 50, dtype=np.int32))
    eval_data = cifar_input.eval_dataset(images, labels, 16)  # 16, 16, 16 and a partial 2

    strategy = _two_replicas()
    resnet = resnet_model.ResNet(HPS)
    train_op = resnet.build_train_op(strategy)
    for _ in range(3):
        train_op.train_step(*_distributed(strategy, tf.data.Dataset.from_tensors(_batch(HPS.batch_size))))
    path = tf.train.Checkpoint(model=train_op.state.model).save(os.path.join(tempfile.mkdtemp(), 'ckpt'))

    def measure(model, strategy):
        eval_step = resnet.build_eval_op(model, strategy)
        totals = [eval_step(*batch) for batch in strategy.experimental_distribute_dataset(eval_data)]
        return {name: float(sum(float(t[name]) for t in totals)) for name in ('loss_sum', 'correct', 'count')}

    restored = resnet.build_model()
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    one_device = measure(restored, tf.distribute.get_strategy())
    return {'two_replicas': measure(train_op.state.model, strategy), 'one_device': one_device}


CASES = (one_step, fast_steps, device_input_steps, muon_steps, checkpoint_across_strategies)

if __name__ == '__main__':
    by_name = {case.__name__: case for case in CASES}
    print(json.dumps({name: by_name[name]() for name in sys.argv[1:] or by_name}))
