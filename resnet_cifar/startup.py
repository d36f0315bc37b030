"""Start-up in one call, which the command line and the Python API both make: TensorFlow's kernels,
its quiet start, plain log lines, and the GPUs, precision and determinism a run uses.

    import resnet_cifar
    resnet_cifar.setup()

Importing this module starts nothing; setup() imports TensorFlow.
"""

import contextlib
import gc
import logging as logging_std
import os
import platform
import sys

from absl import logging

from resnet_cifar import choices

_set_by_setup = set()  # the environment variables setup() set, the user having set none of them


def current_dtype():
    """The compute dtype in effect, as --dtype names it: the one a new run records. Keras' global
    policy is the truth (setup() sets it), so a caller that sets the policy itself is recorded too."""
    import keras  # here: importing this module starts no TensorFlow

    policy = keras.mixed_precision.global_policy().name
    return {keras_name: dtype for dtype, keras_name in choices.DTYPE_POLICIES.items()}.get(policy, policy)


def _environment_defaults():
    # TensorFlow's C++ start-up lines (CUDA probes on a CPU-only machine, oneDNN notices) say nothing
    # about the run: quiet unless the user sets TF_CPP_MIN_LOG_LEVEL (0 shows everything).
    defaults = {'TF_CPP_MIN_LOG_LEVEL': '3'}
    # TensorFlow's oneDNN kernels: on Linux it uses them by default only on x86 CPUs with VNNI,
    # bfloat16 or AMX instructions; on the AVX2 CPU measured they train ResNet-32 faster than its Eigen
    # kernels (docs/performance.md). TF_ENABLE_ONEDNN_OPTS=0 still turns them off. Only on x86-64,
    # where it was measured. TensorFlow reads both once, when it is imported.
    if platform.machine().lower() in ('x86_64', 'amd64'):
        defaults['TF_ENABLE_ONEDNN_OPTS'] = '1'
    return defaults


@contextlib.contextmanager
def _quiet_stderr(quiet):
    """Standard error goes nowhere within, at the file-descriptor level: TensorFlow's C++ logging
    writes there before TF_CPP_MIN_LOG_LEVEL applies, while it loads."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _no_garbage_collection():
    """Python's garbage collector paused within, then as it was. Importing TensorFlow and Keras makes
    hundreds of thousands of objects, few of them garbage, and the full collections their number
    sets off were a good part of the import's time (docs/performance.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Keras imports these when they are installed, for notebooks and for its plotting helpers; no
# command shows either, and importing them slowed every start (docs/performance.md).
NOT_FOR_COMMANDS = ('IPython', 'matplotlib')


@contextlib.contextmanager
def _unimportable(names):
    """Within, importing any of `names` not imported yet fails as if it were not installed (Python's
    import system reads a None in sys.modules so); afterwards they import as before."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _import_tensorflow(command):
    """Imports TensorFlow with the environment defaults the user did not override; for a `command`,
    without Keras' imports for notebooks and plots, and with what it loaded left out of the garbage
    collections to come (gc.freeze: it lives as long as the process). Returns whether the kernel
    choice came too late: something imported TensorFlow before, without it."""
    defaults = _environment_defaults()
    if 'tensorflow' in sys.modules:
        return 'TF_ENABLE_ONEDNN_OPTS' in defaults.keys() - os.environ.keys()
    for name, value in defaults.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_by_setup.add(name)
    with (
        _quiet_stderr('TF_CPP_MIN_LOG_LEVEL' in _set_by_setup),
        _no_garbage_collection(),
        _unimportable(NOT_FOR_COMMANDS if command else ()),
    ):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    if command:
        gc.freeze()
    return False


def child_environment():
    """The environment without the defaults setup() added: a child Python started from here (a
    trainer of a sweep) then chooses for itself, as from the user's shell."""
    return {name: value for name, value in os.environ.items() if name not in _set_by_setup}


class _PlainFormatter(logging_std.Formatter):
    """A line as README shows it: the message alone; warnings and errors say which they are."""

    def format(self, record):
        message = record.getMessage()
        return message if record.levelno < logging_std.WARNING else f'{record.levelname.lower()}: {message}'


class _WithoutTensorFlowInfo(logging_std.Filter):
    """Drops TensorFlow's own INFO lines (per save: `Sharding callback duration`): a run prints its
    own lines."""

    def filter(self, record):
        return record.levelno > logging_std.INFO or f'{os.sep}tensorflow{os.sep}' not in record.pathname


class _StderrHandler(logging_std.StreamHandler):
    """Writes to the sys.stderr of the moment (a redirect, a test's capture), as print() does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


_PLAIN = _PlainFormatter()


def _plain_logging():
    """The project's INFO lines on standard error, plain: through the handler absl's app.run puts on
    the root logger, or, from Python, one of ours where the root logger has none (absl's would warn
    that no flags were parsed; a logging set-up of the user's own stays as it is). Before TensorFlow
    is imported: it adds a handler of its own where the root logger has none."""
    root, absl_logger = logging_std.getLogger(), logging.get_absl_logger()
    if logging.get_absl_handler() in root.handlers:
        logging.get_absl_handler().setFormatter(_PLAIN)
    elif not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_PLAIN)
        root.addHandler(handler)
    if absl_logger.level == logging_std.NOTSET:  # not chosen by the user (absl's --verbosity)
        logging.set_verbosity(logging.INFO)
    if not any(isinstance(f, _WithoutTensorFlowInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_WithoutTensorFlowInfo())


def setup(num_gpus=None, deterministic=False, dtype='float32', name=str, command=False):
    """Starts TensorFlow as a run needs it, before any op runs; the command line calls it first.

    TensorFlow is imported with its oneDNN kernels (x86-64) and without its C++ start-up lines,
    unless the environment says otherwise; the project's progress lines print plainly, TensorFlow's
    own INFO lines not at all. Then devices.configure_tensorflow(num_gpus, deterministic, dtype):
    num_gpus None uses every visible GPU, 0 the CPU only; deterministic turns on TensorFlow's op
    determinism; dtype 'bfloat16' or 'float16' computes in mixed precision, 'auto' in the one measured
    fastest on this machine (dtype_speed: measured once, cached); float16 on a CPU gets a warning.
    Returns the dtype used. `name` words a setting in the lines it logs (the command line: its flag).
    `command`: this process is one of the project's commands, never a notebook or a user's script,
    and starts as a command can (_import_tensorflow).
    """
    _plain_logging()
    too_late = _import_tensorflow(command)
    import tensorflow as tf

    tf.get_logger().setLevel('WARNING')  # its INFO lines are TensorFlow's, not the run's
    if too_late:
        logging.info(
            'TensorFlow was imported before resnet_cifar.setup(), so its default kernels apply, not the oneDNN '
            'ones the command line uses; call setup() first to run as it does'
        )
    from resnet_cifar import devices, dtype_speed, machine

    devices.configure_tensorflow(num_gpus, deterministic, 'float32' if dtype == 'auto' else dtype)
    on_cpu = not tf.config.get_visible_devices('GPU')
    return dtype_speed.settle(dtype, machine.describe_machine(), on_cpu, machine.onednn_on(), tf.__version__, name)
