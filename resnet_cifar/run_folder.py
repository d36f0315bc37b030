"""The run folder LOG_ROOT: its hparams.json, its checkpoints, and the one check a checkpoint
passes before resume, eval, predict or export uses it.

The checkpoints on disk are the truth. Every checkpoint carries the run's configuration
(`run_config`), so a folder's checkpoints say which network they hold even without hparams.json,
and hparams.json must agree with the newest of them. The `checkpoint` index file only says which
checkpoint is newest: a missing, empty or garbled index, or one naming checkpoints whose files are
gone, never makes a run with checkpoints start again; a resume rebuilds it from the files.
"""

import json
import os
import re
import time

import tensorflow as tf
from absl import logging

from resnet_cifar import atomic_write, checkpoint_index, json_files, saved_config
from resnet_cifar.checkpoint_index import CHECKPOINT_NAME, INDEX, on_disk, step_of
from resnet_cifar.errors import UserError, reason  # noqa: F401  (run_folder.reason: the project's name for it)

RUN_CONFIG = 'hparams.json'
# The data settings that decide which images are training images, and in which order.
TRAINING_IMAGES = ('data_source', 'train_data_path', 'validation_size', 'seed')
CONFIG_KEY = 'run_config/.ATTRIBUTES/VARIABLE_VALUE'


class RunError(UserError):
    """The run cannot go on as asked; the message says why and what to do."""


class WriteError(RunError):
    """A write into the run failed: a full disk, a quota, a read-only or vanished folder, an I/O error."""


def write_failed(path, error, newest=None):
    """The WriteError for `error` (an OSError or a TensorFlow OpError) while writing `path`;
    `newest` names the newest complete checkpoint, which a run started again resumes from."""
    resume = f'; the newest complete checkpoint is {newest}' if newest else ''
    return WriteError(
        f'cannot write {path}: {reason(error)}{resume}; free space or fix the folder, then run the same command again'
    )


def write_json(path, values, newest=None):
    """Writes atomically, so a reader never sees half a file, each list of numbers on one line (a
    confusion matrix reads as rows); `newest` names the newest complete checkpoint, for the error
    when the write fails."""
    # A list that json.dumps spread over lines ('[' then a newline, never inside a string), with no strings in it.
    text = re.sub(r'\[\n[^\[\]{}"]*\]', lambda m: json.dumps(json.loads(m.group())), json.dumps(values, indent=2))
    try:
        atomic_write.write_text(path, text + '\n')
    except OSError as e:
        raise write_failed(path, e, newest) from None


def read_json(path, way_out='fix it or move it away', expected=dict):
    """The JSON value of a file the project wrote, checked (json_files.read_json)."""
    return json_files.read_json(path, way_out, expected)


def make_dir(path, key):
    """Creates the folder (the setting `key` names) and checks it can be written, before any work."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunError(f'{path} is a file, not a folder; give a folder', key)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise RunError(f'cannot write to {path}: {e.strerror}', key) from None
    return path


# ---------------------------------------------------------------------------
# hparams.json: what the run is, checked against its newest checkpoint.


def read_config(log_root):
    """The RunConfig of the run in LOG_ROOT, or None for a new run: hparams.json, checked key by
    key and against the configuration the newest checkpoint holds; without hparams.json, that
    checkpoint's configuration."""
    if os.path.exists(log_root) and not os.path.isdir(log_root):
        raise RunError(f'{log_root} is a file, not a folder; give a folder', 'log_root')
    path = os.path.join(log_root, RUN_CONFIG)
    newest = _newest_configured(log_root)
    way_out = (
        f'move {RUN_CONFIG} away to go on with the configuration {newest[0]} holds (flags you give still apply)'
        if newest
        else 'fix it, move it away to start afresh, or use another log_root'
    )
    try:
        saved = json_files.read_json(path, way_out, dict, mentions=['log_root'])
    except FileNotFoundError:
        if newest:
            logging.warning('%s is missing: using the configuration of %s', path, newest[0])
            return newest[1]
        return None
    config = saved_config.parse(saved, log_root, path, way_out)
    if newest:
        _check_agreement(path, config, *newest, way_out)
    return config


def _newest_configured(log_root):
    """(path, RunConfig) of the newest checkpoint on disk whose configuration can be read, or None."""
    for path in on_disk(log_root):
        try:
            config = checkpoint_config(path)
        except (tf.errors.OpError, UserError, ValueError, IndexError, OSError):
            continue  # damaged: resume, eval and predict each say so in their words
        if config:
            return path, config
    return None


def _flat(config):
    values = config.to_json()
    return {
        **{key: values[key] for key in ('dataset', 'preset', 'dtype') if key in values},
        **{f'hparams.{key}': value for key, value in values['hparams'].items()},
        **{f'data.{key}': value for key, value in values['data'].items()},
    }


def _check_agreement(path, config, checkpoint, checkpoint_config_, way_out):
    ours, theirs = _flat(config), _flat(checkpoint_config_)
    for key, value in ours.items():
        if key in theirs and theirs[key] != value:  # dtype: not in a checkpoint of an earlier version
            raise RunError(
                f'{path}: {key} is {json.dumps(value)}, but {checkpoint}, the newest checkpoint, holds '
                f'{json.dumps(theirs[key])}; {way_out}',
                mentions=['log_root'],
            )


def write_config(config):
    """Writes hparams.json of a new run, before its first checkpoint."""
    path = os.path.join(config.log_root, RUN_CONFIG)
    write_json(path, config.to_json(), newest=(checkpoints(config.log_root) or ['none'])[0])


def record_config(manager):
    """Writes hparams.json beside the checkpoint `manager` (a tf.train.CheckpointManager) has just
    saved, from the configuration that checkpoint holds, so the two agree; a resume that changes
    settings thus records them with its first checkpoint."""
    path = os.path.join(manager.directory, RUN_CONFIG)
    write_json(path, json.loads(manager.checkpoint.run_config.numpy()), newest=manager.latest_checkpoint)


# ---------------------------------------------------------------------------
# Checkpoints: the files on disk, and the index.


def checkpoints(log_root):
    """The checkpoints of the folder, newest first: those the index names, when it is sound (a
    checkpoint is named only once completely written: the index is replaced atomically after the
    data); else those on disk."""
    named, problem = checkpoint_index.read_index(log_root)
    if problem:
        return on_disk(log_root)
    return [path for path in named if os.path.exists(path + '.index')]


def newest_first(log_root):
    """The folder's checkpoints one by one, newest first, listed again after each: a trainer that
    rotates its checkpoints may delete one before it is read, and meanwhile save a newer one."""
    tried = set()
    while True:
        fresh = [path for path in checkpoints(log_root) if path not in tried]
        if not fresh:
            return
        tried.add(fresh[0])
        yield fresh[0]


def watch(log_root, timeout, interval=1):
    """Each new newest checkpoint as it appears, until `timeout` seconds pass without one. As
    tf.train.checkpoints_iterator, which raises on an empty index and cannot see past a damaged one."""
    last, waited_since = None, time.time()
    while time.time() - waited_since <= timeout:
        newest = (checkpoints(log_root) or [None])[0]
        if newest and newest != last:
            last = newest
            yield newest
            waited_since = time.time()
        else:
            time.sleep(interval)


def unreadable(path):
    """Why the checkpoint at `path` cannot be read, or None. Reads every tensor, so a truncated
    or corrupted file shows here rather than halfway through a restore."""
    if os.path.isdir(path):
        return f'{path} is a folder, not a checkpoint ({CHECKPOINT_NAME}-STEP in a run folder)'
    if not os.path.exists(path + '.index'):
        return f'{path}: no such checkpoint (no {os.path.basename(path)}.index there)'
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:  # a truncated tensor raises IndexError
        return f'{path} is unreadable ({reason(e)})'
    return None


def checkpoint_config(path):
    """The RunConfig a (readable) checkpoint of this trainer carries, checked as hparams.json is,
    or None for another writer's."""
    reader = tf.train.load_checkpoint(path)
    if not reader.has_tensor(CONFIG_KEY):
        return None
    way_out = 'the checkpoint is damaged: move its files away, or use another log_root'
    try:
        saved = json.loads(reader.get_tensor(CONFIG_KEY))
    except (ValueError, RecursionError):
        raise RunError(f'{path}: its run configuration is not valid JSON; {way_out}', mentions=['log_root']) from None
    return saved_config.parse(saved, os.path.dirname(path), path, way_out)


def foreign(path, config=None):
    """Why the readable checkpoint at `path` cannot serve `config`'s network (or, with no config,
    any run of this trainer), or None."""
    saved = checkpoint_config(path)
    if saved is None:
        return f'{path} was not written by this trainer'
    if config is not None and saved.network() != config.network():
        return f'{path} belongs to a run of {saved.describe()}, not {config.describe()}'
    return None


def checkpoint_problem(path, config=None):
    """Why the checkpoint at `path` cannot be used for `config`, or None: the one check."""
    return unreadable(path) or foreign(path, config)


def usable(paths, purpose, config=None):
    """The checkpoints of `paths` that pass the check, in order, for `purpose` ('evaluate').
    One deleted meanwhile (by a trainer's rotation) or unreadable is skipped (another may serve);
    a foreign one stops everything, since the folder holds another run."""
    for path in paths:
        if not os.path.exists(path + '.index'):
            logging.info('skipping %s: deleted by the trainer before it could be read', path)
            continue
        problem = unreadable(path)
        if problem:
            logging.warning('skipping %s', problem)
            continue
        problem = foreign(path, config)
        if problem:
            raise RunError(f'cannot {purpose}: {problem}')
        yield path


def resume_checkpoint(config, repair=True):
    """The checkpoint a training run resumes from: the newest complete, readable one on disk, or
    None for a fresh start. When the index does not name it, the index is rebuilt (with `repair`:
    the writer of the folder) and a warning says what was found. A damaged or foreign newest
    checkpoint is refused with a way out: resuming from an older one would drop steps, and its
    next save would replace the damaged files."""
    log_root = config.log_root
    found = on_disk(log_root)
    named, index_problem = checkpoint_index.read_index(log_root)
    if not found:
        if named:
            raise RunError(
                f'cannot resume: {index_problem}; put the checkpoint files back, or move {INDEX} away to start '
                'again from step 0',
                mentions=['log_root'],
            )
        return None
    newest_named = None if index_problem else step_of(named[0])
    for path in found:
        problem = unreadable(path)
        if problem and newest_named is not None and step_of(path) > newest_named:
            logging.info('ignoring %s: a save that did not finish (the index never named it)', path)
            continue
        problem = problem or foreign(path, config)
        if problem:
            raise RunError(f'cannot resume: {problem}; {_way_out(path, found, config)}', mentions=['log_root'])
        break
    if index_problem or named[0] != path:
        why = index_problem or f'{os.path.join(log_root, INDEX)} names {os.path.basename(named[0])}'
        logging.warning(
            '%s; resuming from %s, the newest complete checkpoint of the %d in the folder%s',
            why,
            path,
            len(found),
            ', and rebuilding the index' if repair else '',
        )
        if repair:
            try:
                checkpoint_index.rebuild(log_root, [p for p in found if step_of(p) <= step_of(path)])
            except (tf.errors.OpError, OSError) as e:
                raise write_failed(os.path.join(log_root, INDEX), e, path) from None
    if repair:
        checkpoint_index.remove_unfinished_saves(log_root)
    _check_same_training_images(path, config)
    _check_same_dtype(path, config)
    return path


def _way_out(refused, found, config):
    older = (path for path in found if step_of(path) < step_of(refused) and not checkpoint_problem(path, config))
    usable_one = next(older, None)
    if usable_one:
        return f'{usable_one} is usable: move the files of {os.path.basename(refused)}.* away to resume from it'
    return (
        f'no earlier checkpoint is usable: move the {CHECKPOINT_NAME}-* files and {INDEX} away to start again from '
        'step 0, or use another log_root'
    )


def _check_same_training_images(path, config):
    """Refuses a resume that would train on other images: held-out validation images, say."""
    saved = checkpoint_config(path).data
    changed = [name for name in TRAINING_IMAGES if getattr(saved, name) != getattr(config.data, name)]
    if changed:
        started = ', '.join(f'{name}={getattr(saved, name)!r}' for name in changed)
        asked = ', '.join(f'{name}={getattr(config.data, name)!r}' for name in changed)
        raise RunError(
            f'cannot resume: {path} was trained with {started}; resuming with {asked} would change which images '
            'are training images; drop that setting, or use another log_root',
            mentions=[*changed, 'log_root'],
        )


def _check_same_dtype(path, config):
    """Refuses a resume in another compute dtype: a run's numbers come from one dtype, which its
    folder records (a run of an earlier version recorded none, and resumes in any)."""
    saved = checkpoint_config(path).dtype
    if saved and config.dtype and saved != config.dtype:
        raise RunError(
            f'cannot resume in {config.dtype}: {path} was trained in {saved}; resume with dtype={saved} '
            '(a run keeps one dtype), or start a new run in another log_root',
            'dtype',
            ['dtype', 'log_root'],
        )
