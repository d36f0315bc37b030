"""Where a training run resumes: the newest complete, readable checkpoint of its folder, checked
to hold the same network and training images; the index repaired when it says otherwise.
"""

import os

import tensorflow as tf
from absl import logging

from resnet_cifar import checkpoint_index
from resnet_cifar.checkpoint_index import CHECKPOINT_NAME, INDEX, checkpoint_problem, foreign, on_disk, step_of
from resnet_cifar.errors import RunError, write_failed

# The data settings that decide which images are training images, and in which order.
TRAINING_IMAGES = ('data_source', 'train_data_path', 'validation_size', 'seed')


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
        problem = checkpoint_index.unreadable(path)
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
    saved = checkpoint_index.checkpoint_config(path).data
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
    saved = checkpoint_index.checkpoint_config(path).dtype
    if saved and config.dtype and saved != config.dtype:
        raise RunError(
            f'cannot resume in {config.dtype}: {path} was trained in {saved}; resume with dtype={saved} '
            '(a run keeps one dtype), or start a new run in another log_root',
            'dtype',
            ['dtype', 'log_root'],
        )
