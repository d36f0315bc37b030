"""Plots a run's training loss and precision against step into a PNG, for people not running TensorBoard.

    python scripts/plot_metrics.py LOG_ROOT [--output PATH] [--train_dir DIR] [--eval_dir DIR]

writes LOG_ROOT/metrics.png (or PATH) with two panels: training loss (`cost`, and `xent` when logged), and
precision (training `Precision`, eval `Precision` and `Best Precision`). It reads the TensorBoard event files
resnet_main.py writes to LOG_ROOT/train and LOG_ROOT/eval (or to the --train_dir/--eval_dir it was given), and
prints the path of the image. A run still in progress can be plotted; a run without eval gets the training curves.
"""

import argparse
import os
import sys
import types

LOSS_TAGS = ('cost', 'xent')
TRAIN_PRECISION_TAGS = ('Precision',)
EVAL_PRECISION_TAGS = ('Precision', 'Best Precision')


class PlotError(Exception):
    """A user mistake: reported as one line and exit code 2, not a traceback."""


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


def plot(title, train, evaluation, output):
    """Draws the two panels; a panel with no data says so rather than disappearing."""
    import matplotlib

    matplotlib.use('Agg')  # files only: no display needed, and none of a GUI backend's start-up
    import matplotlib.pyplot as plt

    fig, (loss_ax, precision_ax) = plt.subplots(2, 1, sharex=True, figsize=(9, 7), dpi=100)
    for tag in LOSS_TAGS:
        if tag in train:
            loss_ax.plot(*train[tag], label=f'train {tag}')
    for tag in TRAIN_PRECISION_TAGS:
        if tag in train:
            precision_ax.plot(*train[tag], label=f'train {tag}', alpha=0.7)
    styles = {'Precision': {'marker': 'o', 'markersize': 3}, 'Best Precision': {'linestyle': '--'}}
    for tag in EVAL_PRECISION_TAGS:
        if tag in evaluation:
            precision_ax.plot(*evaluation[tag], label=f'eval {tag}', **styles[tag])
    for ax, ylabel in ((loss_ax, 'training loss'), (precision_ax, 'precision')):
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc='best')
        else:
            ax.text(0.5, 0.5, 'no data', transform=ax.transAxes, ha='center', va='center', color='gray')
    precision_ax.set_xlabel('step')
    loss_ax.set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(output)
    except (OSError, ValueError) as e:  # a missing folder, no permission, or an extension matplotlib does not know
        raise PlotError(f'--output: cannot write {output}: {getattr(e, "strerror", None) or e}') from None
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
        raise PlotError(f'{args.log_root}: no such directory; expected a run directory (resnet_main.py --log_root)')
    for flag in ('train_dir', 'eval_dir'):  # given on purpose, so a typo should not pass as "no eval yet"
        if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
            raise PlotError(f'--{flag}: no such directory: {getattr(args, flag)}')
    train_dir = args.train_dir or os.path.join(args.log_root, 'train')
    eval_dir = args.eval_dir or os.path.join(args.log_root, 'eval')
    train = read_scalars(train_dir, LOSS_TAGS + TRAIN_PRECISION_TAGS)
    evaluation = read_scalars(eval_dir, EVAL_PRECISION_TAGS)
    if not train and not evaluation:
        raise PlotError(
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
    try:
        main()
    except PlotError as e:
        sys.stderr.write(f'error: {e}\n')
        sys.exit(2)
