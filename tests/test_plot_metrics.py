"""scripts/plot_metrics.py on event files written the way resnet_main.py writes them (TF2 tf.summary.scalar)."""

import importlib.util
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import ROOT
from PIL import Image

SCRIPT = os.path.join(ROOT, 'scripts', 'plot_metrics.py')


def write_scalars(directory, tag_values):
    """One event file in directory: {tag: {step: value}}, as tf.summary.scalar stores them (tensors)."""
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default():
        for tag, values in tag_values.items():
            for step, value in values.items():
                tf.summary.scalar(tag, value, step=step)
    writer.close()


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A run of 1000 steps: training summaries every 100 steps, an eval every 250."""
    root = tmp_path_factory.mktemp('run')
    train_steps, eval_steps = range(100, 1001, 100), range(250, 1001, 250)
    write_scalars(
        os.path.join(root, 'train'),
        {
            'cost': {s: 2.5 - s / 500 for s in train_steps},
            'xent': {s: 2.3 - s / 500 for s in train_steps},
            'Precision': {s: 0.1 + s / 1500 for s in train_steps},
            'learning_rate': {s: 0.1 for s in train_steps},
        },
    )
    write_scalars(
        os.path.join(root, 'eval'),
        {
            'Precision': {s: 0.1 + s / 2000 for s in eval_steps},
            'Best Precision': {s: 0.1 + s / 2000 for s in eval_steps},
            'loss': {s: 2.0 - s / 1000 for s in eval_steps},
        },
    )
    return str(root)


def plot(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def assert_real_plot(path):
    """A PNG of a sensible size with lines on it, not a blank canvas."""
    with Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.width >= 400 and image.height >= 300
        colors = image.convert('RGB').getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 10, colors


def assert_user_error(result, *expected):
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    for text in expected:
        assert text in lines[0]


def test_writes_png_into_log_root(run_dir):
    result = plot(run_dir)
    assert result.returncode == 0, result.stderr
    path = os.path.join(run_dir, 'metrics.png')
    assert result.stdout.strip() == path
    assert_real_plot(path)


def test_output_and_summary_dirs_elsewhere(run_dir, tmp_path):
    output = os.path.join(tmp_path, 'curves.png')
    result = plot(
        str(tmp_path),
        f'--train_dir={os.path.join(run_dir, "train")}',
        '--eval_dir',
        os.path.join(run_dir, 'eval'),
        '--output',
        output,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == output
    assert_real_plot(output)


def test_run_without_eval_is_plotted(run_dir, tmp_path):
    result = plot(str(tmp_path), f'--train_dir={os.path.join(run_dir, "train")}')
    assert result.returncode == 0, result.stderr
    assert_real_plot(os.path.join(tmp_path, 'metrics.png'))


def test_does_not_import_tensorflow(run_dir, tmp_path):
    """Importing TensorFlow would cost seconds; the event files are read without it."""
    code = (
        'import runpy, sys; '
        f'sys.argv = [{SCRIPT!r}, {run_dir!r}, "--output", {os.path.join(tmp_path, "x.png")!r}]; '
        f'runpy.run_path({SCRIPT!r}, run_name="__main__"); '
        'print("tensorflow" in sys.modules)'
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'False'


def test_missing_log_root_is_one_line_error(tmp_path):
    missing = os.path.join(tmp_path, 'no_such_run')
    assert_user_error(plot(missing), missing, 'no such directory')


def test_log_root_without_summaries_is_one_line_error(tmp_path):
    os.makedirs(os.path.join(tmp_path, 'train'))
    assert_user_error(plot(str(tmp_path)), os.path.join(str(tmp_path), 'train'), 'cost or Precision')
    assert not os.path.exists(os.path.join(tmp_path, 'metrics.png'))


def test_missing_eval_dir_flag_is_one_line_error(run_dir, tmp_path):
    missing = os.path.join(tmp_path, 'typo')
    assert_user_error(plot(run_dir, f'--eval_dir={missing}'), '--eval_dir', missing)


def test_resumed_run_keeps_the_newest_value_of_a_step(tmp_path):
    """A resumed run writes some steps again, in a later file: one point per step, the newest."""
    spec = importlib.util.spec_from_file_location('plot_metrics', SCRIPT)
    plot_metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_metrics)
    train = os.path.join(tmp_path, 'train')
    write_scalars(train, {'cost': {100: 3.0, 200: 2.0, 300: 9.0}})
    write_scalars(train, {'cost': {300: 1.5, 400: 1.0}})
    steps, values = plot_metrics.read_scalars(train, ('cost', 'Precision'))['cost']
    assert steps == [100, 200, 300, 400]
    assert values == pytest.approx([3.0, 2.0, 1.5, 1.0])
