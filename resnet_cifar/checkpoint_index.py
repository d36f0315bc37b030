"""The `checkpoint` index of a run folder, and the ckpt-STEP files it indexes: what each says,
and the index rebuilt from the files when it has gone wrong.

tf.train.CheckpointManager reads the index alone: a missing, empty or garbled one looks like a
folder without checkpoints to it, and an empty one makes it raise. run_folder compares the two
before a CheckpointManager is made.
"""

import os
import re
import shutil

import tensorflow as tf
from absl import logging

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
