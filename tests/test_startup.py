"""startup.setup(): the one start the command line and Python share. In fresh processes, since what
is imported first, and what logging was set up before, is what it is about."""

import importlib.util
import logging
import os
import platform
import re
import subprocess
import sys

import pytest

import resnet_cifar

ABSL_PREFIX = re.compile(r'^[IWEF]\d{4} |^(INFO|WARNING):(absl|tensorflow):')


def _python(code, **env):
    """`code` run by a new Python from a folder outside the checkout, as a user's script."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith('TF_')}
    return subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd='/', env={**environment, **env}
    )


def test_importing_the_package_and_the_command_line_starts_no_tensorflow():
    """Flags are defined (and --help printed) without TensorFlow; setup() is what imports it."""
    result = _python(
        'import sys, resnet_cifar, resnet_main\n'
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
        'print(sorted(resnet_cifar.__all__))\n'
    )
    assert result.returncode == 0, result.stderr
    imported, api = result.stdout.splitlines()
    assert imported == '[]'
    for name in ('setup', 'new_run', 'train', 'evaluate', 'predict', 'export', 'load', 'read_config'):
        assert f"'{name}'" in api


def test_a_command_starts_without_keras_imports_for_notebooks_and_plots():
    """A command's setup skips Keras' optional imports of IPython and matplotlib (those installed:
    matplotlib always is) and freezes what TensorFlow loaded; they import again afterwards. A
    script's setup skips nothing."""
    installed = sorted(name for name in resnet_cifar.startup.NOT_FOR_COMMANDS if importlib.util.find_spec(name))
    code = (
        'import gc, importlib, sys, resnet_cifar.startup as startup\n'
        'startup.setup(command={command})\n'
        'print(sorted(set(startup.NOT_FOR_COMMANDS) & set(sys.modules)), gc.get_freeze_count() > 0)\n'
        f'for name in {installed}: importlib.import_module(name)\n'
        'print(sorted(set(startup.NOT_FOR_COMMANDS) & set(sys.modules)))\n'
    )
    command, script = _python(code.format(command=True)), _python(code.format(command=False))
    assert command.returncode == 0 and script.returncode == 0, command.stderr + script.stderr
    assert 'matplotlib' in installed
    assert command.stdout.splitlines() == ['[] True', str(installed)]
    assert script.stdout.splitlines() == [f'{installed} False', str(installed)]


def test_every_name_of_the_python_api_resolves():
    for name in resnet_cifar.__all__:
        assert callable(getattr(resnet_cifar, name)), name


def _tiny_run(folder, **env):
    """Two steps of a ResNet-8 on synthetic images in a user's script, which then prints the
    TF_ENABLE_ONEDNN_OPTS it ran with."""
    return _python(
        'import os, resnet_cifar\n'
        'resnet_cifar.setup()\n'
        f'config = resnet_cifar.new_run({str(folder)!r}, overrides={{"num_residual_units": 1, "batch_size": 8,'
        ' "train_steps": 2}, data=resnet_cifar.DataSettings(data_source="synthetic"), summary_every_steps=1)\n'
        'resnet_cifar.train(config)\n'
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n",
        **env,
    )


def test_after_setup_a_run_prints_plain_lines_and_none_of_tensorflows(tmp_path):
    result = _tiny_run(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith('step ')] == [
        line for line in lines if re.match(r'step [12]/2: loss [\d.]+, precision', line)
    ]
    assert any(line.startswith('step 2/2: ') for line in lines), result.stderr
    assert any(line.startswith(f'saved {tmp_path}') for line in lines), result.stderr
    assert not [line for line in lines if ABSL_PREFIX.match(line)], result.stderr
    assert 'Sharding callback' not in result.stderr and 'absl::InitializeLog' not in result.stderr, result.stderr
    x86 = platform.machine().lower() in ('x86_64', 'amd64')
    assert result.stdout.split()[-1] == ('1' if x86 else 'None'), 'oneDNN kernels, as the command line uses'


X86 = pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'), reason='oneDNN is chosen on x86-64')


@X86
def test_the_user_can_turn_onednn_off(tmp_path):
    """The user's TF_ENABLE_ONEDNN_OPTS=0 stays: no convolution runs on oneDNN's kernels, which
    ONEDNN_VERBOSE=1 would list (scripts/benchmark.py's test sees them listed by default)."""
    result = _tiny_run(tmp_path, TF_ENABLE_ONEDNN_OPTS='0', ONEDNN_VERBOSE='1')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == '0'
    assert ',exec,cpu,convolution,' not in result.stdout


@X86
def test_tensorflow_imported_before_setup_gets_a_hint_not_a_silent_difference():
    result = _python('import tensorflow, resnet_cifar\nresnet_cifar.setup()\n')
    assert result.returncode == 0, result.stderr
    assert 'TensorFlow was imported before resnet_cifar.setup()' in result.stderr, result.stderr
    assert 'call setup() first' in result.stderr


@X86
def test_no_hint_when_the_user_chose_the_kernels(monkeypatch, caplog):
    """In this process TensorFlow is imported already: only the user's own choice silences the hint."""
    caplog.set_level(logging.INFO, logger='absl')
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    resnet_cifar.setup()
    assert 'imported before' not in caplog.text
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS')
    resnet_cifar.setup()
    assert 'TensorFlow was imported before resnet_cifar.setup()' in caplog.text
