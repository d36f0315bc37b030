"""A run folder's checkpoints: the ckpt-STEP files, the `checkpoint` index of them (rebuilt from
the files when it has gone wrong), listing and watching them, and the one check a checkpoint
passes before resume, eval, predict or export uses it.

The files on disk are the truth. tf.train.CheckpointManager reads the index alone: a missing,
empty or garbled one looks like a folder without checkpoints to it, and an empty one makes it
raise. resume compares the two before a CheckpointManager is made.
"""

import json
import os
import re
import shutil
import time

import tensorflow as tf
from absl import logging

from resnet_cifar import saved_config, train_state
from resnet_cifar.errors import RunError, reason
from resnet_cifar.tf_quiet import tensorflow_warnings_off

INDEX = 'checkpoint'  # tf.train.CheckpointManager's index of the checkpoints, newest last
CHECKPOINT_NAME = 'ckpt'  # checkpoints are LOG_ROOT/ckpt-STEP
CHECKPOINT_FILE = re.compile(rf'^{CHECKPOINT_NAME}-(\d+)\.index$')


def step_of(path):
    return int(path.rsplit('-', 1)[1])


def on_disk(log_root):
    """The checkpoints LOG_ROOT holds (ckpt-STEP.index and its data), newest first, whatever the
    index says; one being written may be among them, and shows as unreadable."""
    try:
        names = os.listdir(log_root)
    except OSError:
        return []
    found = sorted(((int(m.group(1)), m.group(0)) for m in map(CHECKPOINT_FILE.match, names) if m), reverse=True)
    return [os.path.join(log_root, name[: -len('.index')]) for _, name in found]


def read_index(log_root):
    """The checkpoints the index names, newest first, and what is wrong with it (None when it is
    sound: it parses and its newest checkpoint is on disk)."""
    path = os.path.join(log_root, INDEX)
    try:
        with open(path, 'rb') as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return [], f'{path} is missing'
    except OSError as e:
        return [], f'{path} cannot be read ({e.strerror})'
    if not text.strip():
        return [], f'{path} is empty'
    try:
        with tensorflow_warnings_off():  # its 'Checkpoint ignored': the caller says what it does instead
            state = tf.train.get_checkpoint_state(log_root)
    except ValueError:  # it parses, but names no checkpoint
        state = None
    if state is None:
        return [], f'{path} is damaged (not a checkpoint index)'
    named = list(reversed(state.all_model_checkpoint_paths)) or [state.model_checkpoint_path]
    if not os.path.exists(named[0] + '.index'):
        return named, f'{path} names {os.path.basename(named[0])}, whose files are gone'
    return named, None


def rebuild(log_root, paths):
    """Writes the index naming `paths` (newest first), as tf.train.CheckpointManager would have.
    Raises OSError or tf.errors.OpError."""
    oldest_first = list(reversed(paths))
    tf.__internal__.train.update_checkpoint_state(
        log_root,
        oldest_first[-1],
        all_model_checkpoint_paths=oldest_first,
        all_model_checkpoint_timestamps=[os.path.getmtime(path + '.index') for path in oldest_first],
        save_relative_paths=True,
    )


def path_of(log_root, step):
    """The checkpoint of `step` in `log_root`: LOG_ROOT/ckpt-STEP (its files add .index, .data-...)."""
    return os.path.join(log_root, f'{CHECKPOINT_NAME}-{step}')


def remove_unfinished_saves(log_root, step=None):
    """Removes what saves began and did not finish: the ckpt-STEP_temp folders a crash left (only
    the writer of the folder saves, and this is it, so none is in progress), or, given `step`, what
    that failed save began, its files too. The complete checkpoints stay."""
    begun = (f'{CHECKPOINT_NAME}-{step}.', f'{CHECKPOINT_NAME}-{step}_temp')
    for name in os.listdir(log_root) if os.path.isdir(log_root) else []:  # a vanished folder holds nothing
        path = os.path.join(log_root, name)
        if step is None and not (name.startswith(f'{CHECKPOINT_NAME}-') and '_temp' in name and os.path.isdir(path)):
            continue
        if step is not None and not name.startswith(begun):
            continue
        logging.info('removing %s, left by a save that did not finish', name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def checkpoints(log_root):
    """The checkpoints of the folder, newest first: those the index names, when it is sound (a
    checkpoint is named only once completely written: the index is replaced atomically after the
    data); else those on disk."""
    named, problem = read_index(log_root)
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
    if not reader.has_tensor(train_state.CONFIG_KEY):
        return None
    way_out = 'the checkpoint is damaged: move its files away, or use another log_root'
    try:
        saved = json.loads(reader.get_tensor(train_state.CONFIG_KEY))
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
