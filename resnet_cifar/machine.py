"""The machine as a run sees it: the CPU's model and instruction-set flags (from /proc/cpuinfo), the
instruction set oneDNN dispatches to, TensorFlow's threads and the GPUs; the start-up line that
resnet_main.py logs and the description scripts/benchmark.py reports, both from here.
"""

import os
import platform
import re
import subprocess
import sys

import tensorflow as tf

from resnet_cifar import devices, dtype_speed

CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16')  # as /proc/cpuinfo names them


def _count(n, thing):
    return f'{n} {thing}' + ('' if n == 1 else 's')


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


def describe_run(machine, strategy_name, gpus_used, replicas, hint=None, name=str):
    """The one start-up line: the devices (the GPUs numbered `gpus_used`, or the CPU) and the strategy,
    then the `hint` if there is one. `name` words a setting (the command line: its flag)."""
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
    return f'{line}; {hint}' if hint else line


def onednn_on():
    """Whether TensorFlow's oneDNN CPU kernels run: unless TF_ENABLE_ONEDNN_OPTS=0."""
    return os.environ.get('TF_ENABLE_ONEDNN_OPTS') != '0'


def startup_line(strategy, dtype='float32', name=str, cache_folder=None):
    """describe_run() for this machine and `strategy`, with dtype_speed's hint from the measurement
    cached for this machine (in `cache_folder`, default the user's): what resnet_main.py logs when a
    run starts."""
    strategy_name, gpus_used = devices.strategy_devices(strategy)
    described, on_cpu = describe_machine(), not gpus_used and strategy_name != 'tpu'
    key = dtype_speed.machine_key(described, tf.__version__)
    hint = dtype_speed.hint(
        described, dtype, on_cpu, onednn_on(), lambda: dtype_speed.read_measurement(key, cache_folder), name
    )
    return describe_run(described, strategy_name, gpus_used, strategy.num_replicas_in_sync, hint, name)


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
