"""Plots a run's loss, precision and learning rate against step into a PNG, for people not running TensorBoard.

    python scripts/plot_metrics.py LOG_ROOT [--output PATH] [--train_dir DIR] [--eval_dir DIR]

writes LOG_ROOT/metrics.png (or PATH) with three panels sharing the step axis:

  loss           training `cost` (cross-entropy + weight decay: what the optimizer minimizes) and `xent`
                 (cross-entropy alone), and eval `loss` (cross-entropy on the eval split), so the two compare;
  precision      training `Precision` (one batch: noisy, so drawn faint under a running mean), eval `Precision`
                 (the whole eval split) and `Best Precision` (the best eval so far, as a step line);
  learning rate  training `learning_rate`, on a log scale: the schedule divides it by 10 at each boundary.

It reads the TensorBoard event files resnet_main.py writes to LOG_ROOT/train and LOG_ROOT/eval (or to the
--train_dir/--eval_dir it was given), and prints the path of the image. A run still in progress can be plotted; a
run without eval gets the training curves.
"""

import argparse
import math
import os
import sys
import types

from resnet_cifar.errors import UserError, exit_on_error

TRAIN_TAGS = ('cost', 'xent', 'Precision', 'learning_rate')
EVAL_TAGS = ('Precision', 'Best Precision', 'loss')

# Legend text per (source, tag): the tags alone ("xent", "cost") mean nothing to someone who did not write the model.
LABELS = {
    ('train', 'cost'): 'train cost: cross-entropy + weight decay on one batch,\nthe loss the optimizer minimizes',
    ('train', 'xent'): 'train xent: cross-entropy alone on one batch,\ncomparable to eval loss',
    ('eval', 'loss'): 'eval loss: cross-entropy\non the whole eval split',
    ('train', 'Precision'): 'train Precision: share right on one batch',
    ('eval', 'Precision'): 'eval Precision\non the whole eval split',
    ('eval', 'Best Precision'): 'eval Best Precision:\nthe best eval so far',
    ('train', 'learning_rate'): 'learning rate',
}
TRAIN_COLORS = {'cost': 'tab:blue', 'xent': 'tab:cyan', 'Precision': 'tab:blue'}
EVAL_COLOR, BEST_COLOR, LR_COLOR = 'tab:red', 'tab:purple', 'tab:green'


def read_scalars(directory, tags):
    """{tag: (steps, values)} for those of `tags` in directory's event files; a missing directory has none.

    TF2's tf.summary.scalar stores tensors, older runs scalars: both are read. A resumed run writes some steps
    again; the newest value of a step wins, so the curve is the one the resumed run went on from.
    """
    if not os.path.isdir(directory):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # here: a mistake is told fast
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(directory, size_guidance={'tensors': 0, 'scalars': 0})
    accumulator.Reload()
    available = accumulator.Tags()
    series = {}
    for tag in tags:
        if tag in available['tensors']:
            events = [
                (e.wall_time, e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)
            ]
        elif tag in available['scalars']:
            events = [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)]
        else:
            continue
        by_step = {step: value for _, step, value in sorted(events, key=lambda event: event[0])}
        steps = sorted(by_step)
        series[tag] = (steps, [by_step[step] for step in steps])
    return series


def smoothing_window(count):
    """An odd number of points near sqrt(count): enough to calm one-batch noise, few enough to keep the jumps at
    learning-rate boundaries where they are. 1 (no smoothing) below 3 points."""
    if count < 3:
        return 1
    return max(3, round(math.sqrt(count)) // 2 * 2 + 1)


def running_mean(values, window):
    """Centred running mean, the window shrinking at the ends: unlike an exponential average it does not lag, so
    the smoothed training curve stays aligned with the eval points at the same step."""
    half = window // 2
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    means = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        means.append((sums[hi] - sums[lo]) / (hi - lo))
    return means


def _line(ax, steps, values, label, **style):
    """ax.plot, with a marker whenever there is a single point: a line through one point draws nothing."""
    if len(steps) == 1:
        style.setdefault('marker', 'o')
    return ax.plot(steps, values, label=label, **style)


def _noisy(ax, steps, values, label, **style):
    """A one-batch series jumps around: its raw points are drawn faint, a running mean over them carries the trend."""
    window = smoothing_window(len(values))
    if window == 1:
        _line(ax, steps, values, label, **style)
        return
    name = label.split(':')[0]
    ax.plot(steps, values, alpha=0.25, linewidth=0.8, marker='.', markersize=3, label=f'{name}: raw points', **style)
    ax.plot(
        steps, running_mean(values, window), linewidth=2, label=f'{label};\nrunning mean of {window} points', **style
    )


def _draw_loss(ax, train, evaluation):
    """Training and eval loss on one axis: xent and eval loss are both plain cross-entropy, so they compare."""
    for tag, style in (('cost', {'linestyle': '-'}), ('xent', {'linestyle': '--'})):
        if tag in train:
            _noisy(ax, *train[tag], LABELS['train', tag], color=TRAIN_COLORS[tag], **style)
    if 'loss' in evaluation:
        _line(ax, *evaluation['loss'], LABELS['eval', 'loss'], color=EVAL_COLOR, marker='o', markersize=6)


def _draw_precision(ax, train, evaluation, last_step):
    """Eval points get markers: a run evaluated once has one point, which a bare line would not draw."""
    if 'Precision' in train:
        _noisy(ax, *train['Precision'], LABELS['train', 'Precision'], color=TRAIN_COLORS['Precision'])
    if 'Precision' in evaluation:
        _line(ax, *evaluation['Precision'], LABELS['eval', 'Precision'], color=EVAL_COLOR, marker='o', markersize=6)
    if 'Best Precision' in evaluation:
        steps, values = evaluation['Best Precision']
        # The best so far holds until a better eval: a step line, carried on to the last step plotted.
        if last_step > steps[-1]:
            steps, values = [*steps, last_step], [*values, values[-1]]
        if len(steps) > 1:  # one eval at the last step: nothing to draw that the eval marker does not already show
            label = LABELS['eval', 'Best Precision']
            ax.plot(steps, values, drawstyle='steps-post', color=BEST_COLOR, linestyle='--', label=label)


def _draw_learning_rate(ax, train):
    """Log scale: a schedule divided by 10 at each boundary shows as even steps. Linear if a value is not positive
    (a warm-up starting at 0), which a log axis cannot place."""
    if 'learning_rate' not in train:
        return
    steps, values = train['learning_rate']
    _line(ax, steps, values, LABELS['train', 'learning_rate'], color=LR_COLOR)
    if min(values) <= 0:
        return
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    low, high = min(values) / 2, max(values) * 2  # a constant rate is not drawn on the panel's edge
    ax.set_yscale('log')
    ax.set_ylim(low, high)
    if high / low < 30:  # within about a decade the powers of 10 alone leave the axis nearly unlabelled: 1-2-5 ticks
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [m * 10.0**e for e in decades for m in (1, 2, 5) if low <= m * 10.0**e <= high]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FormatStrFormatter('%g'))  # 0.001, not 10^-3: the number given as lrn_rate
    ax.yaxis.set_minor_formatter(NullFormatter())


def draw(title, train, evaluation):
    """The figure, not yet saved: tests read its lines and legends. A panel with no data says so rather than
    disappearing, so the layout is the same for every run."""
    import matplotlib

    matplotlib.use('Agg')  # files only: no display needed, and none of a GUI backend's start-up
    import matplotlib.pyplot as plt

    fig, (loss_ax, precision_ax, lr_ax) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 9), dpi=100, height_ratios=(3, 3, 1.4), layout='constrained'
    )
    last_step = max((steps[-1] for steps, _ in (*train.values(), *evaluation.values()) if steps), default=0)
    _draw_loss(loss_ax, train, evaluation)
    _draw_precision(precision_ax, train, evaluation, last_step)
    _draw_learning_rate(lr_ax, train)
    for ax, ylabel in ((loss_ax, 'loss'), (precision_ax, 'precision (share right)'), (lr_ax, 'learning rate')):
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, 'no data', transform=ax.transAxes, ha='center', va='center', color='gray')
    lr_ax.set_xlabel('training step')
    fig.suptitle(f'run {title}')
    return fig


def plot(title, train, evaluation, output):
    """Draws the figure and writes it to output."""
    import matplotlib.pyplot as plt

    fig = draw(title, train, evaluation)
    try:
        fig.savefig(output)
    except (OSError, ValueError) as e:  # a missing folder, no permission, or an extension matplotlib does not know
        raise UserError(f'cannot write {output}: {getattr(e, "strerror", None) or e}', 'output') from None
    finally:
        plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('log_root', metavar='LOG_ROOT', help='The run directory given to resnet_main.py --log_root.')
    parser.add_argument('--output', help='Where the image goes (default LOG_ROOT/metrics.png).')
    parser.add_argument('--train_dir', help='Training summaries (default LOG_ROOT/train).')
    parser.add_argument('--eval_dir', help='Eval summaries (default LOG_ROOT/eval).')
    args = parser.parse_args(argv)

    if not os.path.isdir(args.log_root):
        raise UserError(f'{args.log_root}: no such directory; expected a run directory (resnet_main.py --log_root)')
    for flag in ('train_dir', 'eval_dir'):  # given on purpose, so a typo should not pass as "no eval yet"
        if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
            raise UserError(f'no such directory: {getattr(args, flag)}', flag)
    train_dir = args.train_dir or os.path.join(args.log_root, 'train')
    eval_dir = args.eval_dir or os.path.join(args.log_root, 'eval')
    train = read_scalars(train_dir, TRAIN_TAGS)
    evaluation = read_scalars(eval_dir, EVAL_TAGS)
    if not train and not evaluation:
        raise UserError(
            f'nothing to plot in {train_dir} or {eval_dir}: expected TensorBoard event files with cost or Precision '
            '(resnet_main.py writes them there every --summary_every_steps and at each eval)'
        )
    output = args.output or os.path.join(args.log_root, 'metrics.png')
    plot(os.path.normpath(args.log_root), train, evaluation, output)
    print(output)


def _without_tensorflow():
    """Makes EventAccumulator read files with TensorBoard's pure-Python stub instead of importing TensorFlow.

    It reads through tensorboard.compat.tf, which imports all of TensorFlow (seconds) when it is installed; a module
    named tensorboard.compat.notf is TensorBoard's own switch to the stub. Command line only: in a process that also
    writes summaries, tf.summary (TensorBoard's code too) would get the stub and fail.
    """
    sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))


if __name__ == '__main__':
    _without_tensorflow()
    exit_on_error(main, name=lambda key: f'--{key}')()
