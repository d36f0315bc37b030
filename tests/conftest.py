"""What several test files share: the real CIFAR-10 subset, a tiny network, runs made in-process
or as a user makes them, what a run folder holds, record files, and the check of a one-line user error."""

import dataclasses
import gc
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import resnet_cifar
from resnet_cifar import datasets, process_settings, run_config
from resnet_cifar.hparams_check import make_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = datasets.SHARED_SUBSET

# A ResNet-8 (one unit per stage): the real code paths at a fraction of ResNet-32's cost.
TINY = {'num_residual_units': 1, 'batch_size': 32}
TINY_OVERRIDE = ','.join(f'{key}={value}' for key, value in TINY.items())
# Every switch of the newer recipes on, in a few steps.
ALL_SWITCHES = {
    'lr_schedule': 'cosine',
    'warmup_steps': 2,
    'label_smoothing': 0.1,
    'optimizer': 'nesterov',
    'ema_decay': 0.9,
    'cutout': 8,
    'flip_tta': True,
}
# airbench at a fraction of its widths, with every speed-run switch on, in a few steps.
TINY_FAST = {
    'network': 'airbench',
    'filters': [24, 8, 16, 16],
    'whiten': True,
    'whiten_bias_steps': 3,
    'dirac_init': True,
    'bn_scale': False,
    'bn_decay': 0.6,
    'bn_bias_lr': 64.0,
    'logit_scale': 0.125,
    'optimizer': 'nesterov',
    'momentum': 0.85,
    'decoupled': True,
    'lrn_rate': 11.5,
    'weight_decay_rate': 0.0153,
    'lr_schedule': 'triangular',
    'warmup_steps': 2,
    'warmup_from': 0.2,
    'min_lrn_rate': 0.8,
    'label_smoothing': 0.2,
    'lookahead_every': 2,
    'lookahead_start': 2,
    'alternating_flip': True,
    'translate': 2,
    'reflect_pad': True,
    'flip_tta': True,
    'translate_tta': True,
}


def skip_here_fail_in_ci(message, in_ci):
    """What a test needs is missing: a skip here, a failure in CI (CI=true), which must have it."""
    if os.environ.get('CI') == 'true':
        pytest.fail(f'{message} ({in_ci})')
    pytest.skip(message)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one test worker more than the CPUs this process may use. Many tests wait for
    programs they start (trainers, sweeps, a cluster's workers), and the extra worker computes
    meanwhile (docs/testing.md has the measurements)."""
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(trylast=True)  # after xdist's, which registers 'dsession' in the process that hands out tests
def pytest_configure(config):
    """TensorFlow started as the command line starts it, before the test files import it, in each
    process that runs tests; not in the one that only hands them to the workers (`-n`), whose start
    every worker waits for. `--dist loadfile` hands out the files with the most tests first unless
    told not to; the order pytest_collection_modifyitems gives is the one wanted."""
    if not config.pluginmanager.has_plugin('dsession'):
        resnet_cifar.setup(command=True)
    if hasattr(config.option, 'loadscopereorder'):
        config.option.loadscopereorder = False


def pytest_unconfigure(config):
    """A test process ends as the programs do (errors.run_program): without garbage collection over
    the models and graphs its tests made, which takes seconds once they are done."""
    gc.freeze()


# The files that take longest, with their seconds in one run of the whole suite at three workers
# (docs/testing.md, "What was done"). A stale figure costs time, never a result.
LONGEST_FILES = {
    'test_resnet_main.py': 101,
    'test_export.py': 100,
    'test_sweep.py': 76,
    'test_distribute.py': 70,
    'test_sweep_ray.py': 57,
    'test_fast.py': 53,
    'test_worker_faults.py': 47,
    'test_evaluation.py': 47,
    'test_run_folder.py': 40,
    'test_training_loop.py': 31,
    'test_run_config.py': 30,
    'test_startup.py': 30,
    'test_muon.py': 27,
    'test_training.py': 25,
    'test_recipe.py': 21,
    'test_benchmark.py': 20,
}


def pytest_collection_modifyitems(items):
    """The longest files first, longest to shortest, then the others, those with multi-process tests
    first, then those with slow ones; each file's tests kept together in their order. `--dist
    loadfile` hands whole files to the workers in this order, and a long file handed out last would
    run on alone at the end."""
    marked = {}
    for item in items:
        names = {mark.name for mark in item.iter_markers()}
        weight = 2 if 'multiprocess' in names else 1 if 'slow' in names else 0
        marked[item.path] = max(marked.get(item.path, 0), weight)
    items.sort(key=lambda item: (-LONGEST_FILES.get(item.path.name, 0), -marked[item.path]))


@pytest.fixture(autouse=True, scope='session')
def user_cache(tmp_path_factory):
    """The user's cache folder (dtype_speed's measurements), for this process and the programs it
    starts: one of the tests', never the user's own."""
    folder = str(tmp_path_factory.mktemp('cache'))
    with process_settings.environment({'XDG_CACHE_HOME': folder}):
        yield folder


@pytest.fixture(scope='session')
def subset():
    """The real CIFAR-10 subset; its absence skips locally but fails in CI."""
    if not os.path.exists(os.path.join(SUBSET, 'test_batch.bin')):
        skip_here_fail_in_ci(
            f'the real CIFAR-10 subset is missing at {SUBSET}', 'CI must have ../shared beside the checkout'
        )
    return SUBSET


def tiny_hparams(**values):
    return make_hparams({**TINY, **values})


def tiny_config(log_root, subset, overrides=None, seed=0, **options):
    """The configuration of a tiny run on the real subset; `options` are RunConfig's fields."""
    data = run_config.data_settings('cifar10', subset, seed=seed)
    return run_config.new_run(str(log_root), overrides={**TINY, **(overrides or {})}, data=data, **options)


def with_steps(config, train_steps, **options):
    """The same run asked to go on to `train_steps`; `options` are more RunConfig fields to change."""
    return dataclasses.replace(config, hparams=config.hparams._replace(train_steps=train_steps), **options)


@pytest.fixture
def parsed_flags():
    """resnet_main's flags parsed from a command line in this process; afterwards unparsed, and absl's
    verbosity put back: unparsing resets --verbosity to WARNING, which would hide the INFO lines of
    the tests that run next in this process, at once or at the next SavedModel save (TensorFlow
    sets the verbosity it reads from the flag back after each)."""
    from absl import logging as absl_logging

    import resnet_main

    verbosity = absl_logging.get_verbosity()
    yield lambda *args: resnet_main.FLAGS(['resnet_main.py', *args])
    resnet_main.FLAGS.unparse_flags()
    absl_logging.set_verbosity(verbosity)


@pytest.fixture
def copy_run(tmp_path):
    """Copies a run's folder, for a test that changes it; returns the copy's configuration."""

    def copy(config):
        shutil.copytree(config.log_root, tmp_path / 'run')
        return dataclasses.replace(config, log_root=str(tmp_path / 'run'))

    return copy


def tiny_train_args(subset, log_root, *args):
    """The command line of a tiny training run on the real subset."""
    return (
        '--mode=train',
        '--data_dir',
        subset,
        '--log_root',
        str(log_root),
        f'--hparams_override={TINY_OVERRIDE}',
        *args,
    )


def run_script(script, *args, timeout=600, env=None):
    """Runs SCRIPT (a path in the checkout: 'resnet_main.py', 'scripts/sweep.py') as a user would,
    in `env` (default: this process's environment); returns the completed process."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def run_main(*args, timeout=600):
    """Runs resnet_main.py as a user would; returns the completed process."""
    return run_script('resnet_main.py', *args, timeout=timeout)


def load_script(name):
    """scripts/NAME.py imported as a module, for calling its functions in-process."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoint_steps(log_root):
    """The steps of the checkpoints in a run folder, read from the file names."""
    return sorted(int(f[len('ckpt-') : -len('.index')]) for f in os.listdir(log_root) if f.endswith('.index'))


def summary_tags(directory):
    """The scalar (tensor) and image tags of the event files in `directory`."""
    events = EventAccumulator(str(directory), size_guidance={'tensors': 0, 'images': 0})
    events.Reload()
    return set(events.Tags()['tensors']) | set(events.Tags()['images'])


class TwoReplicas:
    """Stands in for a strategy over two devices where only the replica count is read before a refusal."""

    num_replicas_in_sync = 2


def assert_user_error(result, *fragments, alone=False):
    """A user mistake on the command line: exit code 2, one 'error:' line naming the problem, no traceback;
    with `alone`, that line is all of stderr (a script that starts no TensorFlow)."""
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr
    if alone:
        assert result.stderr.strip() == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def as_flags(error):
    """A UserError's line as the command line words it, each setting named by its flag."""
    return error.line(lambda key: f'--{key}')


def write_records(path, labels, images=None, coarse=None):
    """CIFAR binary records: [coarse label,] label, then the image depth-major (random pixels
    when `images` is None)."""
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    with open(path, 'wb') as f:
        for i, (label, image) in enumerate(zip(labels, images, strict=True)):
            if coarse is not None:
                f.write(bytes([coarse[i]]))
            f.write(bytes([label]) + np.transpose(image, [2, 0, 1]).tobytes())


@pytest.fixture
def fake_gpus(monkeypatch):
    """TensorFlow reports `count` A100s, of which configure_tensorflow() may hide some; returns the
    devices it was asked to leave visible."""
    import tensorflow as tf

    state = {}

    def install(count):
        state['physical'] = state['visible'] = [
            tf.config.PhysicalDevice(f'/physical_device:GPU:{i}', 'GPU') for i in range(count)
        ]

        def listed(device_type=None):
            return list(state['physical']) if device_type == 'GPU' else real_list(device_type)

        def visible(device_type=None):
            return list(state['visible']) if device_type == 'GPU' else real_visible(device_type)

        def set_visible(gpus, device_type=None):
            assert device_type == 'GPU', 'only GPUs are ever hidden'
            state['visible'] = list(gpus)

        monkeypatch.setattr(tf.config, 'list_physical_devices', listed)
        monkeypatch.setattr(tf.config, 'get_visible_devices', visible)
        monkeypatch.setattr(tf.config, 'set_visible_devices', set_visible)
        monkeypatch.setattr(tf.config.experimental, 'get_device_details', lambda gpu: {'device_name': 'NVIDIA A100'})
        return state

    real_list, real_visible = tf.config.list_physical_devices, tf.config.get_visible_devices
    return install


def folder_contents(folder):
    """Every file under `folder` with its bytes: what must stay as it was."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(parent, name), 'rb') as f:
                files[os.path.relpath(os.path.join(parent, name), folder)] = f.read()
    return files


def train_stopped_then_resumed(monkeypatch, config):
    """Trains `config` until its first progress report, where Ctrl-C arrives, then runs the same call
    again, as a user resumes: the two TrainResults."""
    from resnet_cifar import training

    report = training._report

    def interrupt_at_the_first_report(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return report(*args)

    monkeypatch.setattr(training, '_report', interrupt_at_the_first_report)
    stopped = training.train(config)
    monkeypatch.setattr(training, '_report', report)
    return stopped, training.train(config)
