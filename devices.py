"""Devices: TensorFlow's kernels and precision, and the tf.distribute strategy a run uses.

Import this module before TensorFlow (resnet_main.py and scripts/benchmark.py do): TensorFlow
reads its kernel choice once, when it is imported.
"""

import contextlib
import os
import platform

# TensorFlow's C++ start-up lines (CUDA probes on a CPU-only machine, oneDNN notices) say nothing
# about the run: quiet unless the user sets TF_CPP_MIN_LOG_LEVEL (0 shows everything).
QUIET_START = 'TF_CPP_MIN_LOG_LEVEL' not in os.environ
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# TensorFlow's oneDNN kernels: on Linux it uses them by default only on x86 CPUs with VNNI, bfloat16
# or AMX instructions; on the AVX2 CPU measured they train ResNet-32 1.7 to 2 times as fast as its
# Eigen kernels (README, Performance). TF_ENABLE_ONEDNN_OPTS=0 still turns them off. Only on x86-64,
# where it was measured.
if platform.machine().lower() in ('x86_64', 'amd64'):
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


@contextlib.contextmanager
def _quiet_stderr(quiet):
    """Standard error goes nowhere within, at the file-descriptor level: TensorFlow's C++ logging
    writes there before TF_CPP_MIN_LOG_LEVEL applies, while it loads."""
    if not quiet:
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_stderr(QUIET_START):
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

from errors import UserError  # noqa: E402

tf.get_logger().setLevel('WARNING')  # its INFO lines (one per save) are TensorFlow's, not the run's

STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
DTYPE_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}


def configure_tensorflow(num_gpus=0, deterministic=False, dtype='float32'):
    """Visible GPUs, op determinism and the mixed-precision policy: before any op runs."""
    if num_gpus == 0:
        tf.config.set_visible_devices([], 'GPU')
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(DTYPE_POLICIES[dtype])


def make_strategy(name=None, num_gpus=0, tpu=None):
    """The tf.distribute strategy `name`, or the one num_gpus implies (0: default, 1: one device,
    more: mirrored). Create it first: a multi-worker strategy must exist before the runtime starts."""
    name = name or {0: 'default', 1: 'one_device'}.get(num_gpus, 'mirrored')
    gpus = len(tf.config.list_physical_devices('GPU'))
    if num_gpus > gpus:
        raise UserError(f'{num_gpus} asked for, but {gpus} GPUs are visible', 'num_gpus')
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'one_device':
        return tf.distribute.OneDeviceStrategy('/gpu:0' if num_gpus else '/cpu:0')
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy([f'/gpu:{i}' for i in range(num_gpus)] or None)
    if name == 'multi_worker_mirrored':
        if 'TF_CONFIG' not in os.environ:
            raise UserError('multi_worker_mirrored: set TF_CONFIG to the cluster (see README)', 'distribution_strategy')
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_xla(jit_compile, strategy):
    """jit_compile, refused with several replicas: their cross-replica updates cannot be XLA-compiled."""
    replicas = strategy.num_replicas_in_sync
    if jit_compile and replicas > 1:
        raise UserError(
            f'XLA cannot compile this training step across {replicas} replicas; leave it off', 'jit_compile'
        )
    return jit_compile


def is_chief(strategy):
    """The worker that writes checkpoints, summaries and metrics: the chief, else worker 0."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and 'chief' not in resolver.cluster_spec().jobs
