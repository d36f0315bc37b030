"""Trains one recipe over several seeds, a run folder each below one root, and tabulates the results.

    python scripts/sweep.py --root=sweeps/r32 --seeds=5 [--hparams=resnet32 --hparams_override=...] \
        [--parallel=2] [--validation_size=5000] [--eval_every_steps=1000] [--milestones=0.60,0.65]
    python scripts/sweep.py --compare=sweeps/r32,sweeps/r32_cosine

Seed S trains in ROOT/seed_S (resnet_main.py --mode=train_and_eval; output in ROOT/seed_S.log), K at a
time with --parallel=K. Its final checkpoint is then measured on the test split with and without flip
test-time augmentation and, with --validation_size, so is the checkpoint best on validation. ROOT/results.csv
and results.md: a row per seed, then mean, sample std, min and max, with the steps and seconds to the
--milestones. Running again skips finished seeds and resumes the others; ROOT/sweep.json keeps one recipe
per root. --compare: the roots side by side, with the differences of the means and their standard errors.
"""

import calendar
import csv
import dataclasses
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

from resnet_cifar import devices

# isort: split
from absl import app, flags

import cifar_input
from resnet_cifar import (
    evaluation,
    run_config,
    run_folder,
)
from resnet_cifar.errors import UserError

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SUBSET = os.path.normpath(os.path.join(CHECKOUT, '..', 'shared', 'data', 'cifar10-subset'))
SETTINGS, RESULT, LAUNCH = 'sweep.json', 'sweep_result.json', 'sweep_launch.json'
SUMMARY_ROWS = ('mean', 'std', 'min', 'max')
COUNTS = ('steps_', 'seconds_', 'val_step')  # columns of whole numbers
TIME_FORMAT = evaluation.TIME_FORMAT  # the launch record's time compares with history.csv's
CHECKPOINT_EVERY = run_config.RunConfig.__dataclass_fields__['checkpoint_every_steps'].default
COLUMNS = {
    'test_precision': 'the final checkpoint on the test split, flip_tta off',
    'test_precision_flip': 'the same with flip_tta on',
    'val_step': 'the step of the checkpoint best on the validation split (earliest of equals)',
    'val_precision': 'its validation precision',
    'val_test_precision': "its test precision (with the run's own flip_tta)",
    'steps_to_P, seconds_to_P': 'the first eval reaching test precision P, in steps and in seconds from the launch '
    'of the seed (empty: never reached, evals on the validation split; seconds also when the seed was resumed)',
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What every seed of a sweep trains: resnet_main.py's flags of the same names."""

    hparams: str = 'resnet32'
    hparams_override: str = ''
    data_dir: str | None = None  # None: the shared CIFAR-10 subset beside the checkout
    dataset: str = 'cifar10'
    validation_size: int = 0
    eval_every_steps: int = 1000
    dtype: str = 'float32'


def prepare(root, recipe):
    """The recipe checked (preset, overrides, data), with absolute paths, and its HParams; recorded in
    ROOT/sweep.json, or refused if the root holds a sweep of another recipe."""
    hps = run_config.override(
        run_config.load_preset(recipe.hparams), run_config.parse_overrides(recipe.hparams_override), recipe.dataset
    )
    is_file = recipe.hparams.endswith('.json') or os.sep in recipe.hparams  # as run_config.load_preset
    data_dir = recipe.data_dir or (SHARED_SUBSET if os.path.isdir(SHARED_SUBSET) else None)
    if not data_dir:
        raise UserError(f'needed: there is no CIFAR-10 subset at {SHARED_SUBSET}', 'data_dir')
    train, test = cifar_input.data_patterns(recipe.dataset, data_dir)
    cifar_input.list_files(test, recipe.dataset, 'data_dir')
    files = cifar_input.list_files(train, recipe.dataset, 'data_dir')
    count = sum(os.path.getsize(f) // cifar_input.record_bytes(recipe.dataset) for f in files)
    if not 0 <= recipe.validation_size < count:
        raise UserError(f'expected 0 up to {count - 1}, the training images in {data_dir}', 'validation_size')
    run_config.RunConfig('', recipe.dataset, hparams=hps, eval_every_steps=recipe.eval_every_steps)
    preset = os.path.abspath(recipe.hparams) if is_file else recipe.hparams
    recipe = dataclasses.replace(recipe, hparams=preset, data_dir=os.path.abspath(data_dir))
    path = os.path.join(root, SETTINGS)
    settings = {**dataclasses.asdict(recipe), **{f'hparams.{key}': value for key, value in hps._asdict().items()}}
    if os.path.exists(path):
        saved = run_folder.read_json(path)
        changed = [key for key in settings if json.dumps(saved.get(key)) != json.dumps(settings[key])]
        if changed:
            differ = ', '.join(f'{key} {saved.get(key)!r} (now {settings[key]!r})' for key in changed)
            raise UserError(f'{root} holds a sweep of another recipe: {differ}; use another root', 'root')
    else:
        run_folder.make_dir(root, 'root')
        run_folder.write_json(path, settings)
    return recipe, hps


def parse_seeds(text):
    """'3' -> [0, 1, 2]; '3,7' -> [3, 7]; '7,' -> [7]."""
    try:
        seeds = [int(item) for item in text.split(',') if item.strip()] if ',' in text else list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f'expected a count N (seeds 0..N-1) or distinct seeds like 3,7; got {text!r}', 'seeds')
    return seeds


def parse_milestones(text):
    """'0.60,0.65' -> ['0.60', '0.65'], each a precision in (0, 1], named as written."""
    milestones = [item.strip() for item in text.split(',') if item.strip()]
    for item in milestones:
        if not re.fullmatch(r'0?\.\d+|1(\.0*)?', item) or float(item) == 0:
            raise UserError(f'expected precisions in (0, 1] like 0.60,0.65; got {item!r}', 'milestones')
    return milestones


def seed_dir(root, seed):
    return os.path.join(root, f'seed_{seed}')


def _epoch(text):
    return calendar.timegm(time.strptime(text, TIME_FORMAT))


def child_command(root, seed, recipe, hps):
    """resnet_main.py's command line that trains (or resumes) seed `seed` of the sweep."""
    args = {'mode': 'train_and_eval', 'log_root': seed_dir(root, seed), 'seed': seed, **dataclasses.asdict(recipe)}
    if recipe.validation_size:  # keeps every checkpoint saved (each eval's, each CHECKPOINT_EVERY, a few on stops)
        steps, every = hps.train_steps, recipe.eval_every_steps
        saves = {steps, *range(CHECKPOINT_EVERY, steps + 1, CHECKPOINT_EVERY), *range(every, steps + 1, every)}
        args.update(eval_split='validation', keep_checkpoints=len(saves) + 10)
    return [sys.executable, '-m', 'resnet_main', *(f'--{key}={value}' for key, value in args.items())]


def child_env(parallel):
    """The environment of a training child: the user's, with the CPU threads shared by `parallel` children."""
    env = dict(os.environ)
    if devices.QUIET_START:  # set by this process's import of devices: the child decides for itself
        env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    if parallel > 1:
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        for name in ('OMP_NUM_THREADS', 'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS'):
            env.setdefault(name, threads)
    return env


def launch(root, seed, recipe, hps, parallel):
    """Starts seed `seed`'s training; records when, and whether it starts fresh (for the seconds to a milestone)."""
    folder = run_folder.make_dir(seed_dir(root, seed), 'root')
    checkpoints = run_folder.checkpoints(folder)
    done = checkpoints and checkpoints[0].endswith(f'-{hps.train_steps}')
    fresh = not checkpoints and not os.path.exists(os.path.join(folder, 'eval', evaluation.HISTORY))
    now, command = time.strftime(TIME_FORMAT, time.gmtime()), child_command(root, seed, recipe, hps)
    if not (done and os.path.exists(os.path.join(folder, LAUNCH))):  # a complete run keeps its launch record
        run_folder.write_json(os.path.join(folder, LAUNCH), {'launched': now, 'fresh': fresh})
    with open(f'{folder}.log', 'a') as log:
        log.write(f'--- {now} sweep: {shlex.join(command)}\n')
        log.flush()
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=child_env(parallel), start_new_session=True
        )


def measure_seed(root, seed):
    """Measures a trained seed's checkpoints on the test split; writes and returns its sweep_result.json."""
    folder = seed_dir(root, seed)
    config = run_folder.read_config(folder)
    kept = {os.path.basename(path) for path in run_folder.checkpoints(folder)}
    final = os.path.join(folder, f'ckpt-{config.hparams.train_steps}')
    if os.path.basename(final) not in kept:
        raise UserError(f'no final checkpoint {final}')
    result = {'seed': seed, 'final_checkpoint': final}
    for name, flip in (('test_precision', False), ('test_precision_flip', True)):
        flipped = dataclasses.replace(config, hparams=config.hparams._replace(flip_tta=flip))
        result[name] = float(evaluation.measure(flipped, final)['precision'])
    if config.data.validation_size:
        rows = evaluation.read_history(evaluation.report_dir(dataclasses.replace(config, eval_split='validation')))
        best = min(rows, key=lambda row: (-row['precision'], row['step']))
        checkpoint = os.path.join(folder, os.path.basename(best['checkpoint']))
        if os.path.basename(checkpoint) not in kept:
            raise UserError(f'the checkpoint best on validation, {checkpoint}, was not kept')
        result.update(val_step=best['step'], val_precision=best['precision'], val_checkpoint=checkpoint)
        result['val_test_precision'] = float(evaluation.measure(config, checkpoint)['precision'])
    result.update(run_folder.read_json(os.path.join(folder, LAUNCH)))
    run_folder.write_json(os.path.join(folder, RESULT), result)
    return result


def run_sweep(root, seeds, recipe=Recipe(), parallel=1, milestones=('0.60', '0.65')):
    """Trains and measures the seeds that have no result yet, `parallel` at a time, then writes the
    tables of every seed of the root. Returns the seeds that failed (each reported in one line)."""
    recipe, hps = prepare(root, recipe)
    devices.configure_tensorflow(dtype=recipe.dtype)  # measure as the runs evaluated
    pending = [seed for seed in seeds if not os.path.exists(os.path.join(seed_dir(root, seed), RESULT))]
    if len(pending) < len(seeds):
        print(f'{len(seeds) - len(pending)} of {len(seeds)} seeds already have results in {root}')
    running, failed = {}, []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                seed = pending.pop(0)
                running[seed] = launch(root, seed, recipe, hps, parallel)
                print(f'seed {seed}: training, output in {seed_dir(root, seed)}.log')
            seed = next((s for s, proc in running.items() if proc.poll() is not None), None)
            if seed is None:
                time.sleep(0.5)
                continue
            code, log = running.pop(seed).returncode, f'{seed_dir(root, seed)}.log'
            try:
                if code:
                    raise UserError(f'training exited with code {code}')
                result = measure_seed(root, seed)
                print(f'seed {seed}: test precision {result["test_precision"]:.4f}')
            except Exception as e:  # noqa: BLE001  (one seed's failure must not stop the others)
                failed.append(seed)
                message = e.line() if isinstance(e, UserError) else f'{type(e).__name__}: {e}'.splitlines()[0]
                print(f'seed {seed} failed: {message}; see {log}', file=sys.stderr)
    except BaseException:  # Ctrl-C, SIGTERM, a bug: each child still running saves a checkpoint and stops
        for proc in running.values():
            proc.terminate()
            proc.wait()
        raise
    if any(os.path.exists(os.path.join(root, name, RESULT)) for name in os.listdir(root)):
        print(summarize(root, milestones, command_line(root, seeds, recipe, parallel, milestones)))
    return failed


def command_line(root, seeds, recipe, parallel, milestones):
    args = {'root': root, 'seeds': ','.join(map(str, seeds)) + ',' * (len(seeds) == 1), 'parallel': parallel}
    args.update(dataclasses.asdict(recipe), milestones=','.join(milestones))
    return shlex.join(['python', 'scripts/sweep.py', *(f'--{key}={value}' for key, value in args.items())])


def seed_rows(root, milestones):
    """A row per seed of the root with results, in seed order, with the steps and seconds (from the launch,
    for a seed that started fresh) of the first eval on the test split reaching each milestone."""
    rows = []
    for seed in sorted(int(m[1]) for m in (re.fullmatch(r'seed_(\d+)', name) for name in os.listdir(root)) if m):
        folder = seed_dir(root, seed)
        if not os.path.exists(os.path.join(folder, RESULT)):
            continue
        result = run_folder.read_json(os.path.join(folder, RESULT))
        row = {'seed': seed, **{column: result[column] for column in COLUMNS if column in result}}
        history = os.path.join(folder, 'eval', evaluation.HISTORY)
        evals = evaluation.read_history(os.path.dirname(history)) if os.path.exists(history) else []
        for milestone in milestones:
            first = next((e for e in evals if e['split'] == 'test' and e['precision'] >= float(milestone)), None)
            row[f'steps_to_{milestone}'] = first and first['step']
            timed = first and result.get('fresh')
            row[f'seconds_to_{milestone}'] = _epoch(first['time']) - _epoch(result['launched']) if timed else None
        rows.append(row)
    return rows


def stats(values):
    """(n, mean, sample std or None, min, max) of the values given (None: a missing value)."""
    values = [v for v in values if v is not None]
    mean, std = statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None
    return len(values), mean, std, min(values, default=None), max(values, default=None)


def _cell(value, column=None):
    """A value as results.csv (no column) or results.md (the column's format) writes it."""
    if value is None or column is None:
        return '' if value is None else f'{value:.6f}' if isinstance(value, float) else str(value)
    return f'{value:.0f}' if column.startswith(COUNTS) else f'{value:.4f}'


def _mean_std(column, n, mean, std, *_):
    spread = f' ± {_cell(std, column)}' if std is not None else ''
    return f'{_cell(mean, column)}{spread} ({n})' if n else ''


def summarize(root, milestones=('0.60', '0.65'), command=''):
    """Writes ROOT/results.csv and ROOT/results.md from the seeds' results; returns the markdown."""
    rows, s = seed_rows(root, milestones), run_folder.read_json(os.path.join(root, SETTINGS))
    columns = [c for c in rows[0] if c != 'seed'] if rows else []
    summary = {column: stats([row[column] for row in rows]) for column in columns}
    lines = [','.join(['seed', *columns])]
    lines += [','.join(_cell(row[key]) for key in ['seed', *columns]) for row in rows]
    for i, name in enumerate(SUMMARY_ROWS, start=1):  # stats()' mean, std, min, max
        lines.append(','.join([name, *(_cell(summary[c][i]) for c in columns)]))
    table = [f'| seed | {" | ".join(columns)} |', '|' + ' --- |' * (len(columns) + 1)]
    table += [f'| {row["seed"]} | {" | ".join(_cell(row[c], c) for c in columns)} |' for row in rows]
    table.append(f'| mean ± std (n) | {" | ".join(_mean_std(c, *summary[c]) for c in columns)} |')
    for i, name in ((3, 'min'), (4, 'max')):
        table.append(f'| {name} | {" | ".join(_cell(summary[c][i], c) for c in columns)} |')
    legend = [f'- {c}: {text}' for c, text in COLUMNS.items() if c in columns or (milestones and ',' in c)]
    text = f"""# Sweep of {s['hparams']} on {s['dataset']}: {len(rows)} seed{'s' * (len(rows) != 1)}

Made by `{command}`

Preset `{s['hparams']}`, overrides `{s['hparams_override'] or 'none'}`: train_steps \
{s['hparams.train_steps']}, data {s['data_dir']}, validation_size {s['validation_size']}, eval every \
{s['eval_every_steps']} steps, {s['dtype']}. Std is the sample standard deviation (ddof=1), n the seeds counted.

{chr(10).join(table)}

{chr(10).join(legend)}
"""
    for name, content in (('results.csv', '\n'.join(lines) + '\n'), ('results.md', text)):
        with open(os.path.join(root, f'{name}.tmp-{os.getpid()}'), 'w', newline='') as f:  # atomic: a reader sees
            f.write(content)  # the old table or the new one, never half of one
        os.replace(f.name, os.path.join(root, name))
    return text


def compare(roots):
    """The roots' results side by side, as a markdown table: each metric's mean ± std (n) per root and,
    for each root after the first, the difference of its mean from the first's ± its standard error."""
    if len(roots) < 2:
        raise UserError(f'expected two or more sweep roots, got {len(roots)}', 'compare')
    tables, columns = [], []
    for root in roots:
        path = os.path.join(root, 'results.csv')
        if not os.path.isfile(path):
            raise UserError(f'no {path}: run the sweep there first', 'compare')
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            tables.append([row for row in reader if row['seed'] not in SUMMARY_ROWS])
        columns += [c for c in reader.fieldnames if c != 'seed' and c not in columns]
    head = [*roots, *(f'{root} − {roots[0]}' for root in roots[1:])]
    lines = [f'| metric | {" | ".join(head)} |', '|' + ' --- |' * (len(head) + 1)]
    for column in columns:
        found = [stats([float(row[column]) for row in rows if row.get(column)]) for rows in tables]
        cells = [_mean_std(column, *found_stats) for found_stats in found]
        n1, mean1, std1, _, _ = found[0]
        for n, mean, std, _, _ in found[1:]:
            diff, digits = mean - mean1 if n and n1 else None, 0 if column.startswith(COUNTS) else 4
            if diff is None or std is None or std1 is None:
                cells.append('' if diff is None else f'{diff:+.{digits}f} (no SE: one seed)')
                continue
            se = math.sqrt(std1**2 / n1 + std**2 / n)
            cells.append(f'{diff:+.{digits}f} ± {se:.{digits}f}' + (f', {diff / se:+.1f} SE' if se else ''))
        lines.append(f'| {column} | {" | ".join(cells)} |')
    return '\n'.join(lines)


def define_flags():
    flags.DEFINE_string('root', None, 'The sweep folder: a run folder per seed, results.csv, results.md.')
    flags.DEFINE_string('hparams', 'resnet32', 'A preset or a JSON file, as resnet_main.py --hparams.')
    flags.DEFINE_string('hparams_override', '', 'As resnet_main.py --hparams_override.')
    flags.DEFINE_string('seeds', '3', 'A count N (seeds 0..N-1) or a comma list of seeds (3,7; one alone: 7,).')
    flags.DEFINE_integer('parallel', 1, 'How many seeds train at a time, sharing the CPU threads.', lower_bound=1)
    flags.DEFINE_string('data_dir', None, 'As resnet_main.py --data_dir (default: the shared CIFAR-10 subset).')
    flags.DEFINE_enum('dataset', 'cifar10', list(cifar_input.DATASETS), 'cifar10 or cifar100.')
    flags.DEFINE_integer('validation_size', 0, 'Hold out N training images; evals then run on them.', lower_bound=0)
    flags.DEFINE_integer('eval_every_steps', 1000, 'As resnet_main.py --eval_every_steps.', lower_bound=1)
    flags.DEFINE_enum('dtype', 'float32', list(devices.DTYPE_POLICIES), 'As resnet_main.py --dtype.')
    flags.DEFINE_string('milestones', '0.60,0.65', 'Test precisions whose steps and seconds to reach are reported.')
    flags.DEFINE_list('compare', [], 'Two or more sweep roots: print their results side by side, train nothing.')


def _stop(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv):
    """Reads the flags; a user's mistake is one line and exit code 2, a stop stops the children first."""
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    signal.signal(signal.SIGTERM, _stop)
    try:
        if FLAGS.compare:
            print(compare(FLAGS.compare))
            return
        if not FLAGS.root:
            raise UserError('needed: the sweep folder (or --compare=ROOT1,ROOT2)', 'root')
        seeds, milestones = parse_seeds(FLAGS.seeds), parse_milestones(FLAGS.milestones)
        recipe = Recipe(**{field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(Recipe)})
        failed = run_sweep(FLAGS.root, seeds, recipe, FLAGS.parallel, milestones)
    except UserError as e:
        sys.stderr.write(f'error: {e.line(lambda key: f"--{key}" if key in FLAGS else key)}\n')
        sys.exit(2)
    except KeyboardInterrupt as e:
        name = str(e) or 'SIGINT'
        sys.stderr.write(f'stopped by {name}; run the same command to resume\n')
        sys.exit(128 + signal.Signals[name].value)
    if failed:
        which = ', '.join(map(str, failed))
        sys.stderr.write(f'{len(failed)} of {len(seeds)} seeds failed ({which}); run the same command to retry them\n')
        sys.exit(1)


if __name__ == '__main__':
    define_flags()
    app.run(main)
