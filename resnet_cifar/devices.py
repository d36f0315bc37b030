"""Devices: which GPUs a run uses, its precision and op determinism, and its tf.distribute strategy
(every visible GPU unless told otherwise). TensorFlow's kernels and logging are startup.setup()'s.
"""

import os

import keras
import tensorflow as tf

from resnet_cifar.choices import DTYPE_POLICIES
from resnet_cifar.errors import UserError


def configure_tensorflow(num_gpus=None, deterministic=False, dtype='float32'):
    """Visible GPUs, op determinism and the mixed-precision policy: before any op runs.

    num_gpus None leaves every GPU visible; N hides all but the first N (0: the CPU only), so that
    TensorFlow neither places ops on nor reserves memory of the others; more than there are is refused.
    """
    if num_gpus is not None:
        gpus = tf.config.list_physical_devices('GPU')
        if num_gpus > len(gpus):
            raise UserError(f'{num_gpus} asked for, but {_visible(len(gpus))}', 'num_gpus')
        if len(gpus) > num_gpus:
            tf.config.set_visible_devices(gpus[:num_gpus], 'GPU')
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(DTYPE_POLICIES[dtype])


def choose_devices(num_gpus, visible, name=None):
    """The strategy's name and its devices, for num_gpus of the `visible` GPUs (None: all of them).

    No GPU: 'default' on the CPU; one: 'one_device' on it; several: 'mirrored' over them. A `name`
    (--distribution_strategy) overrides the choice; 'default' and 'one_device' use the first GPU only.
    """
    if num_gpus is not None and num_gpus > visible:
        raise UserError(f'{num_gpus} asked for, but {_visible(visible)}', 'num_gpus')
    count = visible if num_gpus is None else num_gpus
    name = name or {0: 'default', 1: 'one_device'}.get(count, 'mirrored')
    if name == 'tpu':
        return name, []
    gpus = [f'/gpu:{i}' for i in range(count if name in ('mirrored', 'multi_worker_mirrored') else min(count, 1))]
    return name, gpus or ['/cpu:0']


def plan(name=None, num_gpus=None):
    """choose_devices() for the GPUs TensorFlow sees now (configure_tensorflow() may have hidden some)."""
    return choose_devices(num_gpus, len(tf.config.get_visible_devices('GPU')), name)


def make_strategy(name=None, num_gpus=None, tpu=None):
    """The tf.distribute strategy `name`, or the one plan() picks for num_gpus GPUs (None: every
    visible one). Create it first: a multi-worker strategy must exist before the runtime starts."""
    name, used = plan(name, num_gpus)
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'one_device':
        return tf.distribute.OneDeviceStrategy(used[0])
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy(used)
    if name == 'multi_worker_mirrored':
        if 'TF_CONFIG' not in os.environ:
            raise UserError('multi_worker_mirrored: set TF_CONFIG to the cluster (see README)', 'distribution_strategy')
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def refuse_xla_across_replicas(jit_compile, strategy):
    """Refuses jit_compile with several replicas: their cross-replica updates cannot be XLA-compiled."""
    replicas = strategy.num_replicas_in_sync
    if jit_compile and replicas > 1:
        raise UserError(
            f'XLA cannot compile this training step across {replicas} replicas; leave it off', 'jit_compile'
        )


def is_chief(strategy):
    """The worker that writes checkpoints, summaries and metrics: the chief, else worker 0."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and 'chief' not in resolver.cluster_spec().jobs


def _visible(n):
    return f'{n} GPU{"" if n == 1 else "s"} {"is" if n == 1 else "are"} visible'


def strategy_devices(strategy):
    """The name (as in STRATEGIES) of a strategy and the numbers of the local GPUs its replicas use."""
    kinds = (
        (tf.distribute.TPUStrategy, 'tpu'),
        (tf.distribute.MultiWorkerMirroredStrategy, 'multi_worker_mirrored'),
        (tf.distribute.MirroredStrategy, 'mirrored'),
        (tf.distribute.OneDeviceStrategy, 'one_device'),
    )
    name = next((kind for cls, kind in kinds if isinstance(strategy, cls)), 'default')
    if name == 'tpu':
        return name, []
    if name == 'default':  # TensorFlow places ops on the first visible GPU, if there is one
        return name, [0] if tf.config.get_visible_devices('GPU') else []
    return name, gpu_numbers(strategy.extended.worker_devices)


def gpu_numbers(device_names):
    """The numbers of the GPUs among TensorFlow device names ('/job:localhost/.../device:GPU:1' -> 1)."""
    specs = [tf.DeviceSpec.from_string(device) for device in device_names]
    return [spec.device_index for spec in specs if (spec.device_type or '').upper() == 'GPU']
