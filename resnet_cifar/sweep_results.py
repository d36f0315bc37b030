"""A sweep's results: each trial's ROOT/TRIAL/sweep_result.json and eval history read back (checked),
tabulated in ROOT/results.csv and results.md, a row per trial and, per configuration of the grid,
the mean, sample std, min and max over its seeds; and the comparison of sweeps side by side.

With a validation split, the configurations are ranked on their mean validation precision: the
first is the one chosen, and its test precision is what the sweep reports.
"""

import calendar
import csv
import io
import math
import os
import re
import statistics
import time

import resnet_model
from resnet_cifar import atomic_write, errors, evaluation, json_files
from resnet_cifar.errors import UserError
from resnet_cifar.sweep_plan import configurations, override_text

RESULT, LAUNCH = 'sweep_result.json', 'sweep_launch.json'
SUMMARY_ROWS = ('mean', 'std', 'min', 'max')
COUNTS = ('step', 'seconds', 'val_step')  # columns of whole numbers (step, steps_to_P, ...)
PRECISIONS = ('test_precision', 'test_precision_flip', 'val_precision', 'val_test_precision')
COLUMNS = {
    'test_precision': 'the final checkpoint on the test split, flip_tta off',
    'test_precision_flip': 'the same with flip_tta on',
    'val_step': 'the step of the checkpoint best on the validation split (earliest of equals)',
    'val_precision': 'its validation precision',
    'val_test_precision': "its test precision (with the run's own flip_tta)",
    'seconds': 'from the launch of the trial to its last eval (empty: the trial was resumed)',
    'steps_to_P, seconds_to_P': 'the first eval reaching test precision P, in steps and in seconds from the launch '
    'of the trial (empty: never reached, evals on the validation split; seconds also when the trial was resumed)',
}


def parse_milestones(text):
    """'0.60,0.65' -> ['0.60', '0.65'], each a precision in (0, 1], named as written."""
    milestones = [item.strip() for item in text.split(',') if item.strip()]
    for item in milestones:
        if not re.fullmatch(r'0?\.\d+|1(\.0*)?', item) or float(item) == 0:
            raise UserError(f'expected precisions in (0, 1] like 0.60,0.65; got {item!r}', 'milestones')
    return milestones


def _epoch(text):
    return calendar.timegm(time.strptime(text, evaluation.TIME_FORMAT))


def _is_time(value):
    try:
        _epoch(value)
    except (TypeError, ValueError):
        return False
    return True


def _precision(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


# What each key of sweep_result.json must hold, and whether every result has it (the val_ keys: with
# a validation split only).
RESULT_KEYS = {
    'seed': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, 'an integer >= 0', True),
    **{key: (_precision, 'a number in [0, 1]', key.startswith('test')) for key in PRECISIONS},
    'val_step': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, 'a positive step', False),
    'launched': (_is_time, f'a UTC time like {time.strftime(evaluation.TIME_FORMAT, time.gmtime(0))}', True),
    'fresh': (lambda v: isinstance(v, bool), 'true or false', True),
}


def read_result(path):
    """A trial's sweep_result.json, checked key by key; a damaged one is refused in one line."""
    return json_files.read_checked(path, RESULT_KEYS, 'delete it, and the sweep run again measures the trial anew')


def read_launch(path):
    """A trial's sweep_launch.json (when it was launched, and whether from nothing), checked."""
    way_out = "delete it and run the sweep again (the trial's seconds are then left empty)"
    try:
        launch = json_files.read_checked(path, {key: RESULT_KEYS[key] for key in ('launched', 'fresh')}, way_out)
    except FileNotFoundError:
        raise UserError(f'no {path}; run the sweep again') from None
    return {'launched': launch['launched'], 'fresh': launch['fresh']}


def read_evals(folder, split):
    """The rows of a trial's history.csv for `split` ([] if it has none), checked."""
    path = os.path.join(folder, 'eval', *(['validation'] * (split == 'validation')), evaluation.HISTORY)
    if not os.path.exists(path):
        return []
    try:
        rows = evaluation.read_history(os.path.dirname(path))
        for row in rows:
            _epoch(row['time'])
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as e:
        raise UserError(
            f'{path}: unreadable eval history ({type(e).__name__}: {e}); restore it, or move it away and the table '
            "leaves this trial's steps and seconds empty"
        ) from None
    return rows


def trial_rows(plan, milestones):
    """A row per recorded trial with a result: its values, seed and measures, the seconds from its launch
    to its last eval and, for each milestone, the steps and seconds of the first test eval reaching it."""
    rows, validation = [], plan.recipe.validation_size > 0
    for trial in plan.recorded:
        folder = plan.folder(trial)
        if not os.path.exists(os.path.join(folder, RESULT)):
            continue
        result = read_result(os.path.join(folder, RESULT))
        measures = [c for c in COLUMNS if c.startswith('test') or (c.startswith('val') and validation)]
        row = {'trial': trial, 'seed': trial.seed, **{c: result.get(c) for c in measures}}
        tests = read_evals(folder, 'test')
        evals = sorted(tests + read_evals(folder, 'validation'), key=lambda e: _epoch(e['time']))
        fresh = result['fresh'] and evals
        row['seconds'] = _epoch(evals[-1]['time']) - _epoch(result['launched']) if fresh else None
        for milestone in milestones:
            first = next((e for e in tests if e['precision'] >= float(milestone)), None)
            row[f'steps_to_{milestone}'] = first and first['step']
            timed = first and result['fresh']
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


def _columns(rows):
    return [c for c in rows[0] if c not in ('trial', 'seed')] if rows else []


def group(plan, rows):
    """[(configuration's values, its rows, its statistics per column)] in the grid's order; with a
    validation split, ranked by the mean validation precision (the best first, the grid's order on ties)."""
    groups = []
    for values in configurations(plan.grid):
        mine = [row for row in rows if row['trial'].values == values]
        if mine:
            groups.append((values, mine, {c: stats([row[c] for row in mine]) for c in _columns(rows)}))
    if plan.recipe.validation_size:
        groups.sort(key=lambda group: -group[2]['val_precision'][1])
    return groups


def write_tables(plan, rows, milestones, command=''):
    """Writes ROOT/results.csv and ROOT/results.md; returns the markdown."""
    groups, keys, columns, ranked = group(plan, rows), list(plan.grid), _columns(rows), plan.recipe.validation_size > 0
    csv_rows = [[*keys, 'seed', *columns, *['val_rank'] * ranked]]
    md_rows = [[*keys, 'seed', *columns, *['val rank'] * ranked]]
    for rank, (values, mine, summary) in enumerate(groups, start=1):
        named = [override_text(value) for value in values.values()]
        csv_rank, md_rank = [rank] * ranked, [f'{rank} chosen' if rank == 1 else rank] * ranked
        for row in mine:
            csv_rows.append([*named, row['seed'], *(_cell(row[c]) for c in columns), *csv_rank])
            md_rows.append([*named, row['seed'], *(_cell(row[c], c) for c in columns), *md_rank])
        for i, name in enumerate(SUMMARY_ROWS, start=1):  # stats()' mean, std, min, max
            csv_rows.append([*named, name, *(_cell(summary[c][i]) for c in columns), *csv_rank])
        md_rows.append([*named, 'mean ± std (n)', *(_mean_std(c, *summary[c]) for c in columns), *md_rank])
        for i, name in ((3, 'min'), (4, 'max')):
            md_rows.append([*named, name, *(_cell(summary[c][i], c) for c in columns), *md_rank])
    text = io.StringIO()
    csv.writer(text, lineterminator='\n').writerows(csv_rows)
    table = ['| ' + ' | '.join(map(str, row)) + ' |' for row in md_rows]
    table.insert(1, '|' + ' --- |' * len(md_rows[0]))
    markdown = _markdown(plan, rows, groups, table, milestones, command)
    for name, content in (('results.csv', text.getvalue()), ('results.md', markdown)):
        path = os.path.join(plan.root, name)
        try:
            atomic_write.write_text(path, content)
        except OSError as e:
            raise errors.write_failed(path, e) from None
    return markdown


def _markdown(plan, rows, groups, table, milestones, command):
    recipe, hps = plan.recipe, plan.hparams
    networks = sorted({resnet_model.network_name(plan.trial_hparams(row['trial'])) for row in rows})
    configs = f'{len(groups)} configuration{"s" * (len(groups) != 1)}, ' if plan.grid else ''
    grid = ', grid `' + ','.join(f'{k}={override_text(v)}' for k, v in plan.grid.items()) + '`' if plan.grid else ''
    columns, chosen = _columns(rows), ''
    if groups and recipe.validation_size:
        values, mine, summary = groups[0]
        name = ', '.join(f'{k}={override_text(v)}' for k, v in values.items()) or 'the recipe'
        chosen = (
            f'\nChosen on validation: {name}, mean validation precision '
            f'{_mean_std("val_precision", *summary["val_precision"])}; its test precision (the checkpoints best '
            f'on validation): {_mean_std("val_test_precision", *summary["val_test_precision"])}.\n'
        )
    legend = [f'- {c}: {text}' for c, text in COLUMNS.items() if c in columns or (milestones and ',' in c)]
    legend += ['- val rank: the configurations ranked on mean validation precision; 1 is chosen'] * bool(chosen)
    made = f'Made by `{command}`\n\n' if command else ''
    return f"""# Sweep of {' and '.join(networks) or 'nothing yet'} on {recipe.dataset}: {configs}{len(rows)} \
trial{'s' * (len(rows) != 1)}

{made}Preset `{recipe.hparams}`, overrides `{recipe.hparams_override or 'none'}`{grid}: train_steps \
{hps.train_steps}, data {recipe.data_dir}, validation_size {recipe.validation_size}, eval every \
{recipe.eval_every_steps} steps, {recipe.dtype}. Std is the sample standard deviation (ddof=1), n the seeds counted.
{chosen}
{chr(10).join(table)}

{chr(10).join(legend)}
"""


def _read_table(root):
    """ROOT/results.csv as (grid keys, metric columns, {configuration: trial rows}); checked."""
    path = os.path.join(root, 'results.csv')
    way_out = 'run the sweep there again to write it anew'
    if not os.path.isfile(path):
        raise UserError(f'no {path}: run the sweep there first', 'compare')
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            table = list(reader)
            fields = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f'{path}: unreadable ({e}); {way_out}', 'compare') from None
    if 'seed' not in fields:
        raise UserError(f'{path}: no seed column; {way_out}', 'compare')
    keys = fields[: fields.index('seed')]
    columns = [c for c in fields[fields.index('seed') + 1 :] if c != 'val_rank']
    configs = {}
    for line, row in enumerate(table, start=2):
        if row['seed'] in SUMMARY_ROWS:
            continue
        try:
            values = {c: float(row[c]) if row[c] else None for c in columns}
        except (TypeError, ValueError):
            bad = next(c for c in columns if not re.fullmatch(r'|[-+.\deE]+', row[c] or ''))
            got = f'expected a number, got {row[bad]!r}'
            raise UserError(f'{path}: line {line}, {bad}: {got}; {way_out}', 'compare') from None
        configs.setdefault(','.join(f'{k}={row[k]}' for k in keys), []).append(values)
    return keys, columns, configs


def compare(roots):
    """The sweeps' configurations side by side (side_by_side), from each root's results.csv."""
    if len(roots) < 2:
        raise UserError(f'expected two or more sweep roots, got {len(roots)}', 'compare')
    heads, tables, columns = [], [], []
    for root in roots:
        _, found, configs = _read_table(root)
        columns += [c for c in found if c not in columns]
        for config, rows in configs.items():
            heads.append(f'{root} [{config}]' if config else root)
            tables.append(rows)
    return side_by_side(heads, tables, columns)


def side_by_side(heads, tables, columns, unit='seed'):
    """A markdown table with a row per metric of `columns` and a column per head: the mean ± std (n)
    of its table's rows (dicts of metric values, None: missing; a row per `unit`) and, for each head
    after the first, the difference of its mean from the first's ± its standard error."""
    head = [*heads, *(f'{other} − {heads[0]}' for other in heads[1:])]
    lines = [f'| metric | {" | ".join(head)} |', '|' + ' --- |' * (len(head) + 1)]
    for column in columns:
        found = [stats([row.get(column) for row in rows]) for rows in tables]
        cells = [_mean_std(column, *found_stats) for found_stats in found]
        n1, mean1, std1, _, _ = found[0]
        for n, mean, std, _, _ in found[1:]:
            diff, digits = mean - mean1 if n and n1 else None, 0 if column.startswith(COUNTS) else 4
            if diff is None or std is None or std1 is None:
                cells.append('' if diff is None else f'{diff:+.{digits}f} (no SE: one {unit})')
                continue
            se = math.sqrt(std1**2 / n1 + std**2 / n)
            cells.append(f'{diff:+.{digits}f} ± {se:.{digits}f}' + (f', {diff / se:+.1f} SE' if se else ''))
        lines.append(f'| {column} | {" | ".join(cells)} |')
    return '\n'.join(lines)
