"""Checks that need two logical CPU devices, which TensorFlow allows only before its runtime starts,
so tests/test_distribute.py runs this file in a fresh process:

    python tests/two_replicas.py CASE    # prints one JSON object of measurements
"""

import json
import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import keras  # noqa: E402
import numpy as np
import tensorflow as tf

import cifar_input
import resnet_model
from resnet_cifar import fast_network
from resnet_cifar.hparams_check import make_hparams
from resnet_cifar.run_config import build_hparams

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


def _two_replicas():
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
    single = resnet_model.ResNet(hps, sync_batch_norm=True)
    single_step = single.build_train_op().train_step
    if hps.whiten:
        pixels = np.random.default_rng(5).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
        fast_network.set_whitening(single.model, fast_network.whitening_kernel(pixels))
    initial = _flat(single.model)
    strategy = _two_replicas()
    mirrored = resnet_model.ResNet(hps, sync_batch_norm=True)
    mirrored_step = mirrored.build_train_op(strategy).train_step
    mirrored.model.set_weights(single.model.get_weights())

    for step in range(steps):
        images, labels = _batch(hps.batch_size, seed=step)
        expected = single_step(images, labels)
        actual = mirrored_step(*_distributed(strategy, tf.data.Dataset.from_tensors((images, labels))))
    return {
        'replicas': strategy.num_replicas_in_sync,
        'loss': [float(expected['cost']), float(actual['cost'])],
        'loss_difference': _relative_difference(actual['cost'].numpy(), expected['cost'].numpy()),
        'weights_difference': _relative_difference(_flat(mirrored.model), _flat(single.model)),
        'update_norm': float(np.linalg.norm(_flat(single.model) - initial)),
    }


def checkpoint_across_strategies():
    """A two-replica checkpoint evaluated under two replicas and restored into one device."""
    rng = np.random.default_rng(1)
    images = tf.constant(rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, 50, dtype=np.int32))
    eval_data = cifar_input.eval_dataset(images, labels, 16)  # 16, 16, 16 and a partial 2

    strategy = _two_replicas()
    trained = resnet_model.ResNet(HPS)
    train_step = trained.build_train_op(strategy).train_step
    for _ in range(3):
        train_step(*_distributed(strategy, tf.data.Dataset.from_tensors(_batch(HPS.batch_size))))
    path = tf.train.Checkpoint(model=trained.model).save(os.path.join(tempfile.mkdtemp(), 'ckpt'))

    def measure(resnet, strategy):
        eval_step = resnet.build_eval_op(resnet.model, strategy)
        totals = [eval_step(*batch) for batch in strategy.experimental_distribute_dataset(eval_data)]
        return {name: float(sum(float(t[name]) for t in totals)) for name in ('loss_sum', 'correct', 'count')}

    restored = resnet_model.ResNet(HPS)
    restored.build_model()
    tf.train.Checkpoint(model=restored.model).restore(path).assert_existing_objects_matched()
    return {'two_replicas': measure(trained, strategy), 'one_device': measure(restored, tf.distribute.get_strategy())}


if __name__ == '__main__':
    print(json.dumps(globals()[sys.argv[1]]()))
