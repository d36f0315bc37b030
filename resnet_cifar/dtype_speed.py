"""Which compute dtype trains faster on this machine, measured rather than assumed from its
instruction sets: a few training steps of ResNet-32 in each candidate dtype, cached per machine
(CPU model, instruction sets, threads, GPUs, TensorFlow and its kernel settings) in the user's cache
folder. `--dtype=auto` measures (or reads the cache) and picks; the start-up hint recommends bfloat16
only where it was measured faster here; float16 on a CPU gets a warning.
"""

import datetime
import hashlib
import json
import os
import time

from absl import logging

from resnet_cifar import atomic_write, json_files, presets
from resnet_cifar.choices import DTYPE_POLICIES
from resnet_cifar.errors import UserError

BFLOAT16_FEATURES = {'amx_bf16': 'AMX_BF16', 'avx512_bf16': 'AVX512_BF16'}  # bfloat16 arithmetic, the faster first
MEASURED_PRESET = 'resnet32'  # the network measured, whatever a run trains: the default one
# Another dtype replaces float32 only when this much faster: closer is within the noise of a short
# measurement on a shared machine, and float32 is what the port reproduces.
MARGIN = 1.1
CACHE_FORMAT = 1


def cache_folder():
    """The user's cache folder for this project: $XDG_CACHE_HOME/resnet-cifar, else ~/.cache/resnet-cifar."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'resnet-cifar')


def bfloat16_feature(machine):
    """The name of the CPU's bfloat16 instructions (AMX_BF16, AVX512_BF16) in describe_machine()'s
    `machine`, or None."""
    return next((label for flag, label in BFLOAT16_FEATURES.items() if machine.get(flag)), None)


def machine_key(machine, tensorflow_version, environ=None):
    """What a measurement holds for: the CPU, its instruction sets, the threads, the GPUs, TensorFlow's
    version and the environment variables that choose its CPU kernels."""
    environ = os.environ if environ is None else environ
    keys = ('cpu_model', 'cpus', 'intra_op_threads', 'inter_op_threads', 'gpus')
    return {
        **{key: machine.get(key) for key in keys},
        'instruction_sets': sorted(key for key, value in machine.items() if value is True),
        'tensorflow': tensorflow_version,
        **{name: environ.get(name) for name in ('TF_ENABLE_ONEDNN_OPTS', 'ONEDNN_MAX_CPU_ISA')},
    }


def cache_path(key, folder=None):
    """The cache file of the machine `key`: one file per machine, named by a digest of the key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder or cache_folder(), f'dtype-speed-{digest}.json')


def _is_rates(value):
    return (
        isinstance(value, dict)
        and 'float32' in value
        and all(
            dtype in DTYPE_POLICIES and isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0
            for dtype, rate in value.items()
        )
    )


def read_measurement(key, folder=None):
    """The cached measurement of the machine `key` ({'images_per_sec': {dtype: rate}, 'measured': date,
    ...}), or None when there is none. A damaged file or one of another machine: one warning line
    naming it, and None, as if nothing had been measured."""
    path = cache_path(key, folder)
    way_out = 'treated as not measured (--dtype=auto measures again and replaces it)'
    checks = {
        'format': (lambda value: value == CACHE_FORMAT, CACHE_FORMAT),
        'machine': (lambda value: value == key, 'this machine'),
        'measured': (lambda value: isinstance(value, str), 'a date'),
        'images_per_sec': (_is_rates, 'a positive rate per dtype, float32 among them'),
    }
    try:
        return json_files.read_checked(path, checks, way_out)
    except FileNotFoundError:
        return None
    except UserError as e:
        logging.warning('%s', e.line())
        return None


def write_measurement(key, rates, folder=None, today=None):
    """Caches `rates` ({dtype: images/s}) for the machine `key`, whole or not at all. A failed write is
    one warning line: the run goes on, and the next --dtype=auto measures again. Returns the record."""
    path = cache_path(key, folder)
    record = {
        'format': CACHE_FORMAT,
        'machine': key,
        'network': f'{MEASURED_PRESET}, synthetic images',
        'measured': (today or datetime.date.today()).isoformat(),
        'images_per_sec': rates,
    }
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write.write_text(path, json.dumps(record, indent=1) + '\n')
    except OSError as e:
        logging.warning('%s: cannot cache the measured speeds (%s); --dtype=auto measures again', path, e.strerror)
    return record


def candidates(machine, on_cpu, onednn):
    """The dtypes worth measuring here. A CPU: float32, and bfloat16 where the CPU has bfloat16
    arithmetic and oneDNN's kernels (which use it) run; float16 never, emulated there. GPUs: all three."""
    if not on_cpu:
        return list(DTYPE_POLICIES)
    return ['float32'] + (['bfloat16'] if onednn and bfloat16_feature(machine) else [])


def fastest(rates):
    """The dtype to train in by `rates`: the fastest, if at least MARGIN times float32's rate; else float32."""
    best = max(rates, key=rates.get)
    return best if rates[best] >= MARGIN * rates['float32'] else 'float32'


def warmed_step(dtype, hps=None, warmup=2, seed=0):
    """A compiled training step of the network `hps` (default: the MEASURED_PRESET) in `dtype`, run
    `warmup` times (tracing, allocation), as a no-argument function returning the loss tensor; on
    synthetic images, so that the step is timed, not the input pipeline. The default strategy's
    device. Leaves Keras' global policy as it found it."""
    import keras
    import tensorflow as tf

    import resnet_model

    hps = hps or presets.build_hparams(MEASURED_PRESET)
    images = tf.random.stateless_normal([hps.batch_size, 32, 32, 3], seed=[seed, 0])
    labels = tf.random.stateless_uniform([hps.batch_size], [seed, 1], maxval=hps.num_classes, dtype=tf.int32)
    policy = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy(DTYPE_POLICIES[dtype])
        keras.utils.set_random_seed(seed)
        train_step = resnet_model.ResNet(hps).build_train_op().train_step
    finally:
        keras.mixed_precision.set_global_policy(policy)

    def step():
        return train_step(images, labels)['cost']

    for _ in range(warmup):
        float(step())
    return step


def measure(dtypes, hps=None, steps=4, rounds=2, warmup=2, seed=0):
    """Training images/s of the network `hps` (default: the MEASURED_PRESET) in each of `dtypes`:
    each dtype's warmed_step() first, then the dtypes take turns, `rounds` times `steps` steps each,
    and each keeps its best round (the least disturbed by other work)."""

    hps = hps or presets.build_hparams(MEASURED_PRESET)
    steps_of = {dtype: warmed_step(dtype, hps, warmup, seed) for dtype in dtypes}
    best = dict.fromkeys(dtypes, 0.0)
    for _ in range(rounds):
        for dtype in dtypes:
            start = time.perf_counter()
            for _ in range(steps):
                cost = steps_of[dtype]()
            float(cost)  # waits for the last step
            best[dtype] = max(best[dtype], steps * hps.batch_size / (time.perf_counter() - start))
    return {dtype: round(rate, 1) for dtype, rate in best.items()}


def choose(machine, on_cpu, onednn, key, folder=None, measure_rates=measure):
    """--dtype=auto: the dtype to train in here, and one line saying why. With one candidate it is
    float32 unmeasured; else the cached measurement of this machine, or a new one (then cached)."""
    dtypes = candidates(machine, on_cpu, onednn)
    if len(dtypes) == 1:
        why = 'oneDNN is off' if bfloat16_feature(machine) else 'this CPU has no bfloat16 arithmetic'
        return 'float32', f'dtype auto: float32 ({why}; 16-bit types are emulated there)'
    record = read_measurement(key, folder)
    if record is None or not set(dtypes) <= set(record['images_per_sec']):
        logging.info(
            'dtype auto: measuring %s on %s, once for this machine (cached in %s)',
            ', '.join(dtypes),
            MEASURED_PRESET,
            cache_path(key, folder),
        )
        record = write_measurement(key, measure_rates(dtypes), folder)
    rates = {dtype: record['images_per_sec'][dtype] for dtype in dtypes}
    chosen = fastest(rates)
    said = ', '.join(f'{dtype} {rate:g}' for dtype, rate in rates.items())
    return (
        chosen,
        f'dtype auto: {chosen} ({MEASURED_PRESET} training images/s here, measured {record["measured"]}: {said})',
    )


def settle(dtype, machine, on_cpu, onednn, tensorflow_version, name=str, folder=None):
    """The dtype a run computes in, of the one asked for: 'auto' chosen (Keras' policy set to it, one
    line saying why); float16 on a CPU with one warning line. `machine` is describe_machine()'s."""
    if dtype == 'float16':
        warning = float16_warning(machine, on_cpu, name)
        if warning:
            logging.warning('%s', warning)
    if dtype != 'auto':
        return dtype
    import keras

    dtype, why = choose(machine, on_cpu, onednn, machine_key(machine, tensorflow_version), folder)
    logging.info('%s', why)
    keras.mixed_precision.set_global_policy(DTYPE_POLICIES[dtype])
    return dtype


def hint(machine, dtype, on_cpu, onednn, read_record, name=str):
    """The start-up hint of a float32 run on a CPU with bfloat16 arithmetic (and oneDNN's kernels):
    where bfloat16 was measured faster here (by read_record(), the cached measurement or None), that
    it was and by how much; where nothing was measured, how to measure; where it was slower, None."""
    feature = bfloat16_feature(machine)
    if dtype != 'float32' or not on_cpu or not onednn or not feature:
        return None
    record = read_record()
    rates = (record or {}).get('images_per_sec', {})
    if 'bfloat16' not in rates:
        auto = f'{name("dtype")}=auto'
        return f'this CPU has {feature}; bfloat16 may train faster, not measured here: {auto} measures once'
    if fastest({'float32': rates['float32'], 'bfloat16': rates['bfloat16']}) != 'bfloat16':
        return None
    ratio = rates['bfloat16'] / rates['float32']
    return (
        f'bfloat16 trained {MEASURED_PRESET} {ratio:.1f} times as fast as float32 on this machine (measured '
        f'{record["measured"]}): {name("dtype")}=bfloat16 or {name("dtype")}=auto'
    )


def float16_warning(machine, on_cpu, name=str):
    """The one warning of a float16 run on a CPU: TensorFlow emulates float16 arithmetic there."""
    if not on_cpu:
        return None
    instead = f'; {name("dtype")}=auto picks bfloat16 where it is faster' if bfloat16_feature(machine) else ''
    return (
        f'{name("dtype")}=float16 on a CPU: TensorFlow emulates float16 arithmetic there, which trains '
        f'far slower than float32 (4.5 to over 20 times on the CPUs measured, docs/performance.md){instead}'
    )
