"""scripts/plot_metrics.py on event files written the way resnet_main.py writes them (TF2 tf.summary.scalar)."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import ROOT, assert_user_error, load_script, run_script
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
    return run_script('scripts/plot_metrics.py', *args, timeout=120)


def assert_real_plot(path):
    """A PNG of a sensible size with lines on it, not a blank canvas."""
    with Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.width >= 400 and image.height >= 300
        colors = image.convert('RGB').getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 10, colors


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
    assert_user_error(plot(missing), missing, 'no such directory', alone=True)


def test_log_root_without_summaries_is_one_line_error(tmp_path):
    os.makedirs(os.path.join(tmp_path, 'train'))
    assert_user_error(plot(str(tmp_path)), os.path.join(str(tmp_path), 'train'), 'cost or Precision', alone=True)
    assert not os.path.exists(os.path.join(tmp_path, 'metrics.png'))


def test_missing_eval_dir_flag_is_one_line_error(run_dir, tmp_path):
    missing = os.path.join(tmp_path, 'typo')
    assert_user_error(plot(run_dir, f'--eval_dir={missing}'), '--eval_dir', missing, alone=True)


def test_resumed_run_keeps_the_newest_value_of_a_step(plot_metrics, tmp_path):
    """A resumed run writes some steps again, in a later file: one point per step, the newest."""
    train = os.path.join(tmp_path, 'train')
    write_scalars(train, {'cost': {100: 3.0, 200: 2.0, 300: 9.0}})
    write_scalars(train, {'cost': {300: 1.5, 400: 1.0}})
    steps, values = plot_metrics.read_scalars(train, ('cost', 'Precision'))['cost']
    assert steps == [100, 200, 300, 400]
    assert values == pytest.approx([3.0, 2.0, 1.5, 1.0])


# -- the figure itself, read in-process: which series are drawn, how, and with what legend --------------------------


@pytest.fixture(scope='module')
def plot_metrics():
    return load_script('plot_metrics')


@pytest.fixture
def draw(plot_metrics):
    """plot_metrics.draw, closing its figures after the test."""
    import matplotlib.pyplot as plt

    figures = []
    yield lambda *args: figures.append(plot_metrics.draw(*args)) or figures[-1]
    for fig in figures:
        plt.close(fig)


def panels(fig):
    """{'loss'|'precision'|'learning rate': axes}, by each panel's y label."""
    return {ax.get_ylabel().split(' (')[0]: ax for ax in fig.axes}


def labelled(ax):
    """{legend text: line} of the lines that have a legend entry."""
    return {line.get_label(): line for line in ax.lines if not line.get_label().startswith('_')}


def line_with(ax, name, *words):
    """The one line whose legend text starts with name and has all words."""
    lines = labelled(ax).items()
    matches = [line for label, line in lines if label.startswith(name) and all(w in label for w in words)]
    assert len(matches) == 1, (name, words, list(labelled(ax)))
    return matches[0]


def draws_something(line):
    """A marker shows even one point; a line without markers needs two distinct points."""
    if line.get_marker() not in (None, '', ' ', 'None') and line.get_markersize() > 0:
        return True
    points = set(zip(line.get_xdata(), line.get_ydata(), strict=True))
    return line.get_linestyle() not in ('', ' ', 'None') and len(points) >= 2


def assert_legends_match_drawn_lines(fig):
    """Every legend entry is a line with something to draw, and every such line is in its panel's legend."""
    for ax in fig.axes:
        legend = ax.get_legend()
        texts = [text.get_text() for text in legend.get_texts()] if legend else []
        assert sorted(texts) == sorted(labelled(ax)), ax.get_ylabel()
        for label, line in labelled(ax).items():
            assert draws_something(line), label


def test_cli_reads_and_plots_eval_loss_and_learning_rate(plot_metrics, run_dir, tmp_path, monkeypatch):
    """From the event files to the figure main() saves: eval loss beside training loss, and the learning rate."""
    import matplotlib.pyplot as plt

    figures = []

    def keep(*args):
        figures.append(real_draw(*args))
        return figures[-1]

    real_draw = plot_metrics.draw
    monkeypatch.setattr(plot_metrics, 'draw', keep)
    monkeypatch.setattr(plt, 'close', lambda fig: None)  # main closes the figure it saved; this test reads it
    output = os.path.join(tmp_path, 'm.png')
    plot_metrics.main([run_dir, '--output', output])
    assert os.path.exists(output)
    (fig,) = figures
    axes = panels(fig)
    eval_loss = line_with(axes['loss'], 'eval loss')
    assert list(eval_loss.get_xdata()) == [250, 500, 750, 1000]
    assert list(eval_loss.get_ydata()) == pytest.approx([1.75, 1.5, 1.25, 1.0])
    for line in eval_loss, line_with(axes['precision'], 'eval Precision'):  # a few evals: each one a marker
        assert line.get_marker() == 'o' and line.get_markersize() >= 5
    cost = line_with(axes['loss'], 'train cost', 'running mean')
    assert list(cost.get_xdata()) == list(range(100, 1001, 100))
    lr = line_with(axes['learning rate'], 'learning rate')
    assert list(lr.get_ydata()) == pytest.approx([0.1] * 10)
    assert list(lr.get_xdata()) == list(range(100, 1001, 100))
    assert axes['learning rate'].get_yscale() == 'log'
    assert os.path.normpath(run_dir) in fig.get_suptitle()
    assert_legends_match_drawn_lines(fig)
    plt.close(fig)


def test_legend_says_what_each_training_tag_is(plot_metrics, run_dir, draw):
    train = plot_metrics.read_scalars(os.path.join(run_dir, 'train'), plot_metrics.TRAIN_TAGS)
    evaluation = plot_metrics.read_scalars(os.path.join(run_dir, 'eval'), plot_metrics.EVAL_TAGS)
    axes = panels(draw('run', train, evaluation))
    assert 'weight decay' in line_with(axes['loss'], 'train cost', 'running mean').get_label()
    assert 'optimizer minimizes' in line_with(axes['loss'], 'train cost', 'running mean').get_label()
    assert 'comparable to eval loss' in line_with(axes['loss'], 'train xent', 'running mean').get_label()
    for ax in axes.values():
        assert ax.get_ylabel()
    assert axes['learning rate'].get_xlabel() == 'training step'


def test_training_precision_is_one_batch_raw_and_smoothed(plot_metrics, run_dir, draw):
    train = plot_metrics.read_scalars(os.path.join(run_dir, 'train'), plot_metrics.TRAIN_TAGS)
    ax = panels(draw('run', train, {}))['precision']
    raw = line_with(ax, 'train Precision', 'raw')
    smooth = line_with(ax, 'train Precision', 'running mean')
    assert 'one batch' in smooth.get_label()
    assert list(raw.get_ydata()) == pytest.approx(train['Precision'][1])
    assert raw.get_alpha() is not None and raw.get_alpha() < 0.5 < (smooth.get_alpha() or 1)
    window = plot_metrics.smoothing_window(10)
    assert list(smooth.get_ydata()) == pytest.approx(plot_metrics.running_mean(train['Precision'][1], window))


def test_running_mean_is_centred_and_shrinks_at_the_ends(plot_metrics):
    assert plot_metrics.running_mean([0, 3, 0, 3, 0], 3) == pytest.approx([1.5, 1, 2, 1, 1.5])
    assert plot_metrics.running_mean([1.0, 2.0], 1) == [1.0, 2.0]
    assert [plot_metrics.smoothing_window(n) for n in (1, 2, 3, 10, 100, 1000)] == [1, 1, 3, 3, 11, 33]


def test_single_eval_is_a_visible_marker(draw):
    """One eval at the end of a short run: its points are markers, and Best Precision, which would draw nothing
    the marker does not show, has no legend entry."""
    steps = [5, 10, 15, 20]
    train = {'cost': (steps, [2.4, 2.3, 2.35, 2.2]), 'Precision': (steps, [0.1, 0.2, 0.1, 0.15])}
    evaluation = {'Precision': ([20], [0.12]), 'Best Precision': ([20], [0.12]), 'loss': ([20], [2.3])}
    fig = draw('run', train, evaluation)
    axes = panels(fig)
    for ax, words in ((axes['loss'], ('eval loss',)), (axes['precision'], ('eval Precision',))):
        line = line_with(ax, *words)
        assert line.get_marker() == 'o' and line.get_markersize() >= 5
        assert list(line.get_xdata()) == [20]
    assert not any(label.startswith('eval Best Precision') for label in labelled(axes['precision']))
    assert_legends_match_drawn_lines(fig)


def test_best_precision_is_a_step_line_to_the_last_step(draw):
    """Evaluated at 20 and 40 of 60 steps: the best so far holds from each eval on, to the end of the plot."""
    steps = [20, 40, 60]
    train = {'cost': (steps, [2.0, 1.5, 1.2])}
    evaluation = {'Precision': ([20, 40], [0.3, 0.2]), 'Best Precision': ([20, 40], [0.3, 0.3])}
    fig = draw('run', train, evaluation)
    best = line_with(panels(fig)['precision'], 'eval Best Precision')
    assert best.get_drawstyle() == 'steps-post'
    assert list(best.get_xdata()) == [20, 40, 60]
    assert list(best.get_ydata()) == pytest.approx([0.3, 0.3, 0.3])
    assert_legends_match_drawn_lines(fig)


@pytest.mark.parametrize(
    'train, evaluation',
    [
        ({'cost': ([10], [2.3])}, {}),  # one summary, no eval
        ({}, {'Precision': ([10], [0.1]), 'Best Precision': ([10], [0.1])}),  # an eval only
        ({'Precision': ([10, 20], [0.1, 0.2]), 'learning_rate': ([10, 20], [0.0, 0.1])}, {'loss': ([20], [2.0])}),
    ],
)
def test_no_legend_entry_without_something_drawn(draw, train, evaluation):
    fig = draw('run', train, evaluation)
    assert_legends_match_drawn_lines(fig)
    for ax in fig.axes:  # a panel with nothing says so
        if not ax.lines:
            assert [text.get_text() for text in ax.texts] == ['no data']


def test_learning_rate_from_zero_stays_linear(draw):
    """A warm-up starting at 0 cannot go on a log axis; the rate is still drawn, on a linear one."""
    axes = panels(draw('run', {'learning_rate': ([0, 10, 20], [0.0, 0.05, 0.1])}, {}))
    assert axes['learning rate'].get_yscale() == 'linear'
    assert list(line_with(axes['learning rate'], 'learning rate').get_ydata()) == [0.0, 0.05, 0.1]
