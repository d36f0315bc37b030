"""A run folder's hparams.json: what the run is, read back and written beside each checkpoint.

The checkpoints on disk are the truth. Every checkpoint carries the run's configuration
(`run_config`), so a folder's checkpoints say which network they hold even without hparams.json,
and hparams.json must agree with the newest of them (checkpoint_index lists and checks them).
"""

import json
import os

import tensorflow as tf
from absl import logging

from resnet_cifar import json_files, saved_config
from resnet_cifar.checkpoint_index import checkpoint_config, checkpoints, on_disk
from resnet_cifar.errors import RunError, UserError
from resnet_cifar.json_files import write_json

RUN_CONFIG = 'hparams.json'


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


def _check_agreement(path, config, checkpoint, held, way_out):
    """Refuses hparams.json (`config`, read from `path`) where it differs from `held`, the
    configuration `checkpoint` holds."""
    ours, theirs = _flat(config), _flat(held)
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
