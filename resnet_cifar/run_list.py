"""The runs under a folder side by side: a row per run with its network's origin (the preset and
what differs), its step, its precision (the last eval's and the best) and its training time; and
chosen runs compared as a sweep's configurations are (sweep_results.side_by_side).

    print(run_list.table(run_list.find_runs('runs')))
    print(run_list.compare(['runs/r32', 'runs/r32_modern']))

Every file is read checked, as the modes read it; a run whose files are damaged is listed with the
one line that says what is wrong, and the others are listed as usual.
"""

import glob
import os

import tensorflow as tf

from resnet_cifar import checkpoint_index, evaluation, run_folder, run_summary, sweep_results
from resnet_cifar.errors import UserError

# What compare() sets side by side: (column, what it is).
METRICS = {
    'last_precision': "the last eval's precision on the run's eval split",
    'best_precision': 'the best eval precision',
    'step': 'the step of the newest checkpoint',
    'seconds': 'training time, summed over the commands that trained it (from its training summaries)',
}


def find_runs(root):
    """The run folders at or under `root` (a folder holding hparams.json or checkpoints), sorted; a
    run's own subfolders (train/, eval/) are not searched."""
    if not os.path.isdir(root):
        raise UserError(f'{root} is not a folder; give the folder your runs are in')
    runs = []
    for folder, subfolders, files in os.walk(root):
        if run_folder.RUN_CONFIG in files or any(name.endswith('.index') for name in files):
            runs.append(folder)
            subfolders.clear()
        subfolders.sort()
    return sorted(runs)


def training_seconds(train_dir):
    """The training time a run's summaries span: per events file (one per command), its last event's
    time minus its first's, summed; None without summaries."""
    spans = []
    for path in sorted(glob.glob(os.path.join(train_dir, 'events.out.tfevents.*'))):
        times = []
        try:
            for record in tf.data.TFRecordDataset(path):
                times.append(tf.compat.v1.Event.FromString(record.numpy()).wall_time)
        except tf.errors.DataLossError:  # the tail of a file whose writer was killed: the events before it count
            pass
        spans += [max(times) - min(times)] if times else []
    return sum(spans) if spans else None


def describe_run(folder):
    """A run's row: {run, network, step, train_steps, split, last_precision, last_step, best_precision,
    seconds}, or {run, problem} when a file of it is damaged."""
    try:
        config = run_folder.read_config(folder)
        if config is None:
            raise UserError(f'{folder}: no readable configuration (hparams.json or a checkpoint)')
        newest = checkpoint_index.checkpoints(folder)
        report = evaluation.report_dir(config)
        evals = evaluation.read_history(report) if os.path.exists(os.path.join(report, evaluation.HISTORY)) else []
        best = evaluation.read_best_precision(report)
    except UserError as e:
        return {'run': folder, 'problem': e.line()}
    return {
        'run': folder,
        'network': f'{config.dataset}, {config.origin()}',
        'step': checkpoint_index.step_of(newest[0]) if newest else 0,
        'train_steps': config.hparams.train_steps,
        'split': config.eval_split,
        'last_precision': evals[-1]['precision'] if evals else None,
        'last_step': evals[-1]['step'] if evals else None,
        'best_precision': best if evals else None,
        'seconds': training_seconds(config.train_folder),
    }


def table(runs):
    """The runs' rows as a markdown table."""
    lines = ['| run | network | step | last eval (step) | best | training time |', '|' + ' --- |' * 6]
    for row in map(describe_run, runs):
        if 'problem' in row:
            lines.append(f'| {row["run"]} | {row["problem"]} | | | | |')
            continue
        last = f'{row["last_precision"]:.4f} ({row["last_step"]})' if row['last_step'] is not None else 'no eval'
        best = f'{row["best_precision"]:.4f}' if row['best_precision'] is not None else ''
        seconds = run_summary.duration(row['seconds']) if row['seconds'] is not None else ''
        step = f'{row["step"]} of {row["train_steps"]}'
        lines.append(f'| {row["run"]} | {row["network"]} | {step} | {last} | {best} | {seconds} |')
    return '\n'.join(lines)


def compare(runs):
    """Two or more runs side by side (sweep_results.side_by_side): each metric of METRICS, and each
    run's difference from the first's. A run whose files are damaged is refused in one line."""
    if len(runs) < 2:
        raise UserError(f'expected two or more run folders, got {len(runs)}', 'compare')
    rows = []
    for run in runs:
        if not os.path.isdir(run):
            raise UserError(f'{run} is not a folder; give run folders (the first column of the list)', 'compare')
        row = describe_run(run)
        if 'problem' in row:
            raise UserError(row['problem'])
        rows.append(row)
    return sweep_results.side_by_side(runs, [[row] for row in rows], list(METRICS), unit='run')
