"""TensorBoard's HParams dashboard for a sweep: `tensorboard --logdir=ROOT` shows each trial's hparams
and flags beside its final measures, as a table, parallel coordinates and scatter plots.

The experiment (which hparams and metrics there are) goes to ROOT, each trial's values and measures to
its folder, with tensorboard.plugins.hparams; each in one events file of its own that is replaced
whole when the sweep writes it again, so the dashboard never shows a trial twice.
"""

import glob
import json
import os
import tempfile

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from resnet_cifar import errors

EVENTS = 'events.out.tfevents.sweep-hparams'  # 'tfevents' in its name: TensorBoard reads it
METRICS = {
    'test_precision': ('test precision', 'the final checkpoint on the test split, flip_tta off'),
    'test_precision_flip': ('test precision, flip TTA', 'the same with flip_tta on'),
    'val_precision': ('validation precision', 'the checkpoint best on the validation split'),
    'val_test_precision': ('its test precision', 'the test precision of the checkpoint best on validation'),
    'seconds': ('seconds', 'from the launch of the trial to its last eval (none when it was resumed)'),
}
FLAGS = ('preset', 'hparams_override', 'dataset', 'data_dir', 'validation_size', 'eval_every_steps', 'dtype')


def _value(value):
    """An hparam as the dashboard takes it: a bool, number or string (a list as its JSON)."""
    return json.dumps(value, separators=(',', ':')) if isinstance(value, list) else value


def trial_values(plan, trial):
    """The trial's hparams, its seed and the sweep's flags, as the dashboard shows them."""
    recipe = {**vars(plan.recipe), 'preset': plan.recipe.hparams}
    values = {name: recipe[name] if recipe[name] is not None else '' for name in FLAGS}
    values['seed'] = trial.seed
    values.update({key: _value(value) for key, value in plan.trial_hparams(trial)._asdict().items()})
    return values


def _write_events(folder, write):
    """Runs write() with a summary writer into a temporary folder, then moves its events file to
    FOLDER/EVENTS, replacing the one written before."""
    try:
        with tempfile.TemporaryDirectory(prefix='.sweep-hparams-', dir=folder) as staging:
            writer = tf.summary.create_file_writer(staging)
            with writer.as_default():
                write()
            writer.close()
            [events] = glob.glob(os.path.join(staging, 'events.out.tfevents.*'))
            os.replace(events, os.path.join(folder, EVENTS))
    except (OSError, tf.errors.OpError) as e:
        raise errors.write_failed(os.path.join(folder, EVENTS), e) from None


def write(plan, rows):
    """The experiment at ROOT, and each trial of `rows` (sweep_results.trial_rows) in its folder."""
    if not rows:
        return
    measured = [name for name in METRICS if any(row.get(name) is not None for row in rows)]
    sessions = {row['trial'].name: (trial_values(plan, row['trial']), row) for row in rows}
    names = list(next(iter(sessions.values()))[0])
    varied = [*plan.grid, 'seed']
    hparams = [
        hp.HParam(name, hp.Discrete(sorted({values[name] for values, _ in sessions.values()})))
        if name in varied
        else hp.HParam(name)
        for name in [*varied, *(name for name in names if name not in varied)]
    ]
    metrics = [
        hp.Metric(f'sweep/{name}', display_name=METRICS[name][0], description=METRICS[name][1]) for name in measured
    ]
    _write_events(plan.root, lambda: hp.hparams_config(hparams=hparams, metrics=metrics))
    for name, (values, row) in sessions.items():

        def session(values=values, row=row, name=name):
            hp.hparams(values, trial_id=name)
            for metric in measured:
                if row.get(metric) is not None:
                    tf.summary.scalar(f'sweep/{metric}', row[metric], step=0)

        _write_events(plan.folder(row['trial']), session)
