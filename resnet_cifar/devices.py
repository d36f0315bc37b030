"""Devices: TensorFlow's kernels and precision, the tf.distribute strategy a run uses (every visible
GPU unless told otherwise), and the description of the machine that the start-up line and
scripts/benchmark.py give.

Import this module before TensorFlow (resnet_main.py and scripts/benchmark.py do): TensorFlow
reads its kernel choice once, when it is imported.
"""

import contextlib
import os
import platform
import re
import subprocess
import sys

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

from resnet_cifar.errors import UserError  # noqa: E402

tf.get_logger().setLevel('WARNING')  # its INFO lines (one per save) are TensorFlow's, not the run's

STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
DTYPE_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}


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


# What the machine is: the start-up line and scripts/benchmark.py describe it the same way.
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')  # as /proc/cpuinfo names them
BFLOAT16_FEATURES = {'amx_bf16': 'AMX_BF16', 'avx512_bf16': 'AVX512_BF16'}  # bfloat16 arithmetic, the faster first


def _count(n, thing):
    return f'{n} {thing}' + ('' if n == 1 else 's')


def _visible(n):
    return f'{_count(n, "GPU")} {"is" if n == 1 else "are"} visible'


def read_cpuinfo(path='/proc/cpuinfo'):
    """The text of `path`, or '' where there is none (not Linux)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def describe_cpu(cpuinfo):
    """The CPU's model and which of CPU_FLAGS it has, from the text of /proc/cpuinfo:
    {'cpu_model': 'AMD EPYC', 'avx2': True, ...}. Without a model name there: the platform's."""
    model, flags = '', None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and not model:
            model = value.strip()
        elif key.strip() == 'flags' and flags is None:
            flags = set(value.split())
    model = model or platform.processor() or platform.machine() or 'unknown CPU'
    return {'cpu_model': model, **{flag: flag in (flags or ()) for flag in CPU_FLAGS}}


def _gpu_name(gpu):
    return tf.config.experimental.get_device_details(gpu).get('device_name', gpu.name)


def describe_machine(cpuinfo=None):
    """The machine as TensorFlow sees it now: describe_cpu() of `cpuinfo` (default: this machine's),
    the logical CPUs, TensorFlow's thread settings (0: its own choice, one per logical CPU), the names
    of the visible GPUs and how many configure_tensorflow() hid. Starts no runtime."""
    visible = tf.config.get_visible_devices('GPU')
    return {
        **describe_cpu(read_cpuinfo() if cpuinfo is None else cpuinfo),
        'cpus': os.cpu_count(),
        'intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads(),
        'inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
        'gpus': [_gpu_name(gpu) for gpu in visible],
        'hidden_gpus': len(tf.config.list_physical_devices('GPU')) - len(visible),
    }


def bfloat16_hint(machine, dtype, on_cpu, onednn=True, name=str):
    """When float32 runs on a CPU with bfloat16 instructions (and oneDNN's kernels, which use them):
    that name('dtype')=bfloat16 trains faster there; else None."""
    if dtype != 'float32' or not on_cpu or not onednn:
        return None
    feature = next((label for flag, label in BFLOAT16_FEATURES.items() if machine.get(flag)), None)
    return feature and f'this CPU has {feature}: {name("dtype")}=bfloat16 trains faster (README, Performance)'


def describe_run(machine, strategy_name, gpus_used, replicas, dtype='float32', onednn=True, name=str):
    """The one start-up line: the devices (the GPUs numbered `gpus_used`, or the CPU) and the strategy,
    with bfloat16_hint() when it applies. `name` words a setting (the command line: its flag)."""
    gpus = machine['gpus']
    if gpus_used:
        names = ', '.join(gpus[i] if i < len(gpus) else f'GPU {i}' for i in gpus_used)
        of = '' if len(gpus_used) == len(gpus) else f' of {len(gpus)}'
        where = f'{len(gpus_used)}{of} GPU{"s" if len(gpus) > 1 else ""} ({names})'
    elif strategy_name == 'tpu':
        where = 'TPU'
    else:
        if gpus:
            why = f'{_count(len(gpus), "GPU")} visible, not used'
        elif machine['hidden_gpus']:
            why = f'{_count(machine["hidden_gpus"], "GPU")} hidden by {name("num_gpus")}=0'
        else:
            why = 'no GPU visible'
        where = f'CPU ({machine["cpu_model"]}, {machine["cpus"]} logical cores; {why})'
    line = f'devices: {where}; strategy: {strategy_name}, {_count(replicas, "replica")}'
    hint = bfloat16_hint(machine, dtype, on_cpu=not gpus_used and strategy_name != 'tpu', onednn=onednn, name=name)
    return f'{line}; {hint}' if hint else line


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


def startup_line(strategy, dtype='float32', name=str):
    """describe_run() for this machine and `strategy`: what resnet_main.py logs when a run starts."""
    strategy_name, gpus_used = strategy_devices(strategy)
    onednn = os.environ.get('TF_ENABLE_ONEDNN_OPTS') != '0'
    return describe_run(
        describe_machine(), strategy_name, gpus_used, strategy.num_replicas_in_sync, dtype, onednn, name
    )


ONEDNN_PROBE = """
import tensorflow as tf
tf.config.set_visible_devices([], 'GPU')
tf.nn.conv2d(tf.zeros([1, 8, 8, 8]), tf.zeros([3, 3, 8, 8]), 1, 'SAME')
"""


def onednn_isa(timeout=120):
    """The instruction set oneDNN dispatches to here, as it reports it (e.g. 'Intel AVX-512 with Intel
    DL Boost and bfloat16 support'): one small convolution in a child Python with ONEDNN_VERBOSE=1 (the
    environment's TF_ENABLE_ONEDNN_OPTS and ONEDNN_MAX_CPU_ISA apply); None if it printed none."""
    env = {**os.environ, 'ONEDNN_VERBOSE': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
    try:
        child = subprocess.run(
            [sys.executable, '-c', ONEDNN_PROBE], capture_output=True, text=True, timeout=timeout, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_onednn_isa(child.stdout)


def parse_onednn_isa(verbose_output):
    """The ISA of oneDNN's `onednn_verbose,...,info,cpu,isa:...` line in its verbose output, or None."""
    found = re.search(r'^(?:onednn|dnnl)_verbose,.*\binfo,cpu,isa:(.*)$', verbose_output, re.MULTILINE)
    return found.group(1).strip() if found else None
