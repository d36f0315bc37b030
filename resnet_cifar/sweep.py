"""A sweep from start to end: the trials of its plan (sweep_plan) trained on an engine (sweep_engines),
each measured on the test split as it ends, then the tables (sweep_results) and TensorBoard's HParams
dashboard (sweep_dashboard) of every trial of the root.

    recipe = sweep_plan.SweepRecipe(hparams='resnet32', data_dir='data')
    failed = sweep.run_sweep('sweeps/lr', recipe, {'lrn_rate': [0.1, 0.2]}, seeds=[0, 1])

Running it again skips the trials that have results and resumes the others. One sweep at a time
per root: a second one is refused while the first runs (ROOT/owner.json).
"""

import contextlib
import dataclasses
import os
import socket
import sys
import time

from resnet_cifar import (
    atomic_write,
    checkpoint_index,
    evaluation,
    json_files,
    ownership,
    run_folder,
    startup,
    sweep_dashboard,
    sweep_plan,
    sweep_results,
)
from resnet_cifar.errors import UserError
from resnet_cifar.sweep_engines import Job, LocalEngine
from resnet_cifar.sweep_results import LAUNCH, RESULT


def run_sweep(root, recipe, grid=None, seeds=(0,), engine=None, milestones=('0.60', '0.65'), command=''):
    """Trains and measures the trials of the grid x seeds over `recipe` (a SweepRecipe) that have no
    result yet on `engine` (default: LocalEngine()), then writes the tables and the dashboard of every
    trial of the root. Returns the trials that failed, each reported in one line; `command` is quoted
    in results.md."""
    engine = engine or LocalEngine()
    sweep_plan.check(recipe, grid)  # a mistake is refused before the root is made
    engine.check()
    with ownership.Ownership(root, 'sweep', 'root'):
        plan = sweep_plan.prepare(root, recipe, grid, seeds)
        startup.setup(dtype=plan.recipe.dtype)  # measured as the trials evaluate
        pending = [trial for trial in plan.trials if not os.path.exists(os.path.join(plan.folder(trial), RESULT))]
        if len(pending) < len(plan.trials):
            print(
                f'{len(plan.trials) - len(pending)} of {len(plan.trials)} trials already have results in {root}',
                flush=True,
            )
        failed = _train_and_measure(plan, pending, engine)
        if any(os.path.exists(os.path.join(plan.folder(trial), RESULT)) for trial in plan.recorded):
            print(summarize(root, milestones, command), flush=True)
    return failed


def summarize(root, milestones=('0.60', '0.65'), command=''):
    """Writes ROOT/results.csv, results.md and the dashboard from the trials' results; returns the markdown."""
    plan = sweep_plan.read_plan(root)
    rows = sweep_results.trial_rows(plan, milestones)
    text = sweep_results.write_tables(plan, rows, milestones, command)
    sweep_dashboard.write(plan, rows)
    return text


def _train_and_measure(plan, trials, engine):
    """Runs the trials' trainers on the engine and measures each as it ends; returns the failed ones."""
    jobs = {Job(trial.name, tuple(sweep_plan.trainer_args(plan, trial)), plan.log(trial)): trial for trial in trials}
    fresh = {trial.name: _is_fresh(plan.folder(trial)) for trial in trials}  # before any of them starts
    failed = []
    with contextlib.closing(engine.run(list(jobs))) as events:  # closed by Ctrl-C too: the trainers stop
        for event in events:
            trial = jobs[event.job]
            if not event.ended:
                _record_launch(plan, trial, fresh[trial.name], event.time)
                where = f' on {event.outcome}' if event.outcome not in (None, socket.gethostname()) else ''
                print(f'{trial.name}: training{where}, output in {plan.log(trial)}', flush=True)
                continue
            try:
                result = measure_trial(plan, trial, event.outcome)
                print(f'{trial.name}: test precision {result["test_precision"]:.4f}', flush=True)
            except Exception as e:  # noqa: BLE001  (one trial's failure must not stop the others)
                failed.append(trial.name)
                message = (e.line() if isinstance(e, UserError) else f'{type(e).__name__}: {e}').strip()
                print(
                    f'{trial.name} failed: {message.splitlines()[0]}; see {plan.log(trial)}',
                    file=sys.stderr,
                    flush=True,
                )
    return failed


def _is_fresh(folder):
    """Whether the trial starts from nothing (its seconds then count from its launch)."""
    return not os.path.exists(os.path.join(folder, run_folder.RUN_CONFIG)) and not checkpoint_index.checkpoints(folder)


def _record_launch(plan, trial, fresh, when):
    """FOLDER/sweep_launch.json: when the trial was launched, and whether from nothing; a trial already
    trained to its end keeps the record of the launch that trained it."""
    folder, steps = plan.folder(trial), plan.trial_hparams(trial).train_steps
    done = any(path.endswith(f'-{steps}') for path in checkpoint_index.checkpoints(folder)[:1])
    if done and os.path.exists(os.path.join(folder, LAUNCH)):
        return
    launched = time.strftime(evaluation.TIME_FORMAT, time.gmtime(when))
    json_files.write_json(
        os.path.join(atomic_write.make_dir(folder, 'root'), LAUNCH), {'launched': launched, 'fresh': fresh}
    )


def _last_error(log):
    """The trainer's last `error:` line in its log, as ' (error: ...)', or ''."""
    try:
        with open(log, 'rb') as f:
            f.seek(max(0, os.path.getsize(log) - 8192))
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return ''
    return next((f' ({line.strip()})' for line in reversed(lines) if line.startswith('error: ')), '')


def measure_trial(plan, trial, outcome):
    """Measures an ended trial's checkpoints on the test split; writes and returns its sweep_result.json.
    A trainer that failed, or a folder this machine cannot see, is one line."""
    folder = plan.folder(trial)
    if outcome != 0:
        reason = outcome if isinstance(outcome, str) else f'training exited with code {outcome}'
        raise UserError(reason + _last_error(plan.log(trial)))
    if not os.path.exists(os.path.join(folder, run_folder.RUN_CONFIG)):
        raise UserError(
            f'the trial ended, but {folder} is not visible from this machine: the sweep root must be on storage '
            'every node sees (docs/sweeps.md)'
        )
    config = run_folder.read_config(folder)
    kept = {os.path.basename(path) for path in checkpoint_index.checkpoints(folder)}
    final = checkpoint_index.path_of(folder, config.hparams.train_steps)
    if os.path.basename(final) not in kept:
        raise UserError(f'no final checkpoint {final}')
    result = {'seed': trial.seed, 'final_checkpoint': final}
    label = f'{trial.name}: measuring: '  # its progress lines, among the other trials' lines
    for name, flip in (('test_precision', False), ('test_precision_flip', True)):
        flipped = dataclasses.replace(config, hparams=config.hparams._replace(flip_tta=flip))
        result[name] = float(evaluation.score_checkpoint(flipped, final, label=label)['precision'])
    if config.data.validation_size:
        evals = sweep_results.read_evals(folder, 'validation')
        if not evals:
            raise UserError(f'{folder}: no eval on the validation split was recorded')
        best = min(evals, key=lambda row: (-row['precision'], row['step']))
        checkpoint = os.path.join(folder, os.path.basename(best['checkpoint']))
        if os.path.basename(checkpoint) not in kept:
            raise UserError(f'the checkpoint best on validation, {checkpoint}, was not kept')
        result.update(val_step=best['step'], val_precision=best['precision'], val_checkpoint=checkpoint)
        result['val_test_precision'] = float(evaluation.score_checkpoint(config, checkpoint, label=label)['precision'])
    result.update(sweep_results.read_launch(os.path.join(folder, LAUNCH)))
    json_files.write_json(os.path.join(folder, RESULT), result)
    return result
