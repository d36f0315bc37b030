"""The checkpoints on disk are the truth: a damaged index never restarts a run, the advice for a
damaged checkpoint works when followed, hparams.json is checked against the newest checkpoint, and
train_and_eval owns its eval folder from the start."""

import dataclasses
import errno
import json
import logging
import os
import shutil

import pytest
import tensorflow as tf
from conftest import as_flags, checkpoint_steps, folder_contents, tiny_config

from resnet_cifar import (
    checkpoint_index,
    errors,
    evaluation,
    json_files,
    restore,
    run_folder,
    saved_config,
    trained_model,
    training,
)
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def four_steps(subset, tmp_path_factory):
    """A tiny run with a checkpoint at each of its 4 steps."""
    config = tiny_config(tmp_path_factory.mktemp('four') / 'run', subset, {'train_steps': 4}, checkpoint_every_steps=1)
    training.train(config)
    return config


@pytest.fixture
def run(four_steps, copy_run, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    return copy_run(four_steps)


def _checkpoint_files(folder):
    return {name: data for name, data in folder_contents(folder).items() if name.startswith('ckpt-')}


def _extended(config, train_steps):
    return dataclasses.replace(config, hparams=config.hparams._replace(train_steps=train_steps))


def _garble(log_root):
    with open(os.path.join(log_root, 'checkpoint'), 'w') as f:
        f.write('garbage {{{')


def _empty(log_root):
    open(os.path.join(log_root, 'checkpoint'), 'w').close()


def _delete(log_root):
    os.remove(os.path.join(log_root, 'checkpoint'))


def _lose_the_newest(log_root):
    """The index names ckpt-4, whose files someone moved away."""
    for name in ('ckpt-4.index', 'ckpt-4.data-00000-of-00001'):
        os.remove(os.path.join(log_root, name))


@pytest.mark.parametrize(
    ('damage', 'resumed_at', 'said'),
    [
        (_garble, 4, 'checkpoint is damaged'),
        (_empty, 4, 'checkpoint is empty'),
        (_delete, 4, 'checkpoint is missing'),
        (_lose_the_newest, 3, 'names ckpt-4, whose files are gone'),
    ],
)
def test_a_damaged_index_resumes_from_the_newest_checkpoint_on_disk(run, caplog, damage, resumed_at, said):
    damage(run.log_root)
    before = _checkpoint_files(run.log_root)
    assert training.train(_extended(run, 6)).step == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and said in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert f'resuming from {run.log_root}/ckpt-{resumed_at}' in warnings[0] and 'rebuilding the index' in warnings[0]
    assert f'from step {resumed_at} to 6' in caplog.text
    after = _checkpoint_files(run.log_root)
    rotated = {name for name in before if name not in after}
    assert all(name.startswith('ckpt-1.') for name in rotated), 'only the oldest goes, to keep_checkpoints'
    assert all(after[name] == data for name, data in before.items() if name in after), 'nothing was overwritten'
    assert checkpoint_steps(run.log_root) == [2, 3, 4, 5, 6]
    assert checkpoint_index.checkpoints(run.log_root)[0].endswith('ckpt-6'), 'the index names the new checkpoints'


def test_predict_and_eval_read_the_checkpoints_on_disk_past_a_damaged_index(run):
    _empty(run.log_root)
    newest = os.path.join(run.log_root, 'ckpt-4')
    assert checkpoint_index.checkpoints(run.log_root) == [os.path.join(run.log_root, f'ckpt-{s}') for s in (4, 3, 2, 1)]
    assert next(checkpoint_index.watch(run.log_root, timeout=5)) == newest
    model, config = trained_model.load(run.log_root)
    assert config.hparams == run.hparams


def test_the_advice_for_a_damaged_newest_checkpoint_works_when_followed(run, tmp_path):
    data = os.path.join(run.log_root, 'ckpt-4.data-00000-of-00001')
    with open(data, 'r+b') as f:
        f.truncate(100)
    before = folder_contents(run.log_root)
    with pytest.raises(UserError) as error:
        training.train(_extended(run, 6))
    line = as_flags(error.value)
    assert 'ckpt-4 is unreadable' in line and 'ckpt-3 is usable: move the files of ckpt-4.* away' in line, line
    assert folder_contents(run.log_root) == before

    moved = tmp_path / 'moved'
    moved.mkdir()
    for name in os.listdir(run.log_root):
        if name.startswith('ckpt-4.'):
            shutil.move(os.path.join(run.log_root, name), moved / name)
    assert training.train(_extended(run, 6)).step == 6
    assert sorted(os.listdir(moved)) == ['ckpt-4.data-00000-of-00001', 'ckpt-4.index']


def test_a_stale_temporary_save_folder_is_removed_at_resume(run):
    os.makedirs(os.path.join(run.log_root, 'ckpt-5_temp', 'part-00000-of-00001'))
    assert training.train(_extended(run, 5)).step == 5
    assert not [name for name in os.listdir(run.log_root) if '_temp' in name]


def _edit_hparams_json(log_root, edit):
    path = os.path.join(log_root, 'hparams.json')
    with open(path) as f:
        saved = json.load(f)
    edit(saved)
    with open(path, 'w') as f:
        json.dump(saved, f)


def test_a_key_missing_from_hparams_json_is_refused_not_filled_in(run):
    _edit_hparams_json(run.log_root, lambda saved: saved['hparams'].pop('train_steps'))
    before = folder_contents(run.log_root)
    with pytest.raises(UserError) as error:
        run_folder.read_config(run.log_root)
    line = as_flags(error.value)
    assert line.startswith(f'{run.log_root}/hparams.json: hparams.train_steps is missing'), line
    assert 'move hparams.json away' in line and 'ckpt-4' in line
    assert folder_contents(run.log_root) == before


def test_hparams_json_of_the_first_version_still_loads(run):
    """It wrote none of the keys added since: they take the defaults, its behaviour. A file that
    holds some of the keys a later version added lost the others."""

    def first_version(saved):
        saved['hparams'] = {key: saved['hparams'][key] for key in saved_config.keys_of_version(1)}

    _edit_hparams_json(run.log_root, first_version)
    assert run_folder.read_config(run.log_root).hparams == run.hparams
    _edit_hparams_json(run.log_root, lambda saved: saved['hparams'].update(cutout=0))
    with pytest.raises(UserError, match='hparams.lr_schedule is missing'):
        run_folder.read_config(run.log_root)


def test_hparams_json_that_disagrees_with_the_newest_checkpoint_is_refused_and_the_advice_works(run, caplog):
    _edit_hparams_json(run.log_root, lambda saved: saved['hparams'].update(train_steps=500))
    with pytest.raises(UserError) as error:
        run_folder.read_config(run.log_root)
    line = as_flags(error.value)
    assert 'hparams.train_steps is 500, but' in line and 'ckpt-4, the newest checkpoint, holds 4' in line, line
    os.rename(os.path.join(run.log_root, 'hparams.json'), os.path.join(run.log_root, 'hparams.json.bad'))
    assert run_folder.read_config(run.log_root).hparams == run.hparams
    assert 'hparams.json is missing: using the configuration of' in caplog.text


def test_a_resume_that_changes_settings_records_them_with_its_next_checkpoint(run, monkeypatch):
    """Until then hparams.json keeps agreeing with the newest checkpoint, however the run ends."""
    save = tf.train.CheckpointManager.save

    def full_disk(self, checkpoint_number=None, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', full_disk)
    with pytest.raises(UserError, match='No space left'):
        training.train(_extended(run, 6))
    assert run_folder.read_config(run.log_root).hparams.train_steps == 4
    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save)
    assert training.train(_extended(run, 6)).step == 6
    assert run_folder.read_config(run.log_root).hparams.train_steps == 6


def test_eval_once_racing_a_trainer_that_rotates_every_step_evaluates_the_newest(run, monkeypatch):
    """The trainer saves ckpt-5 and deletes every older one just as eval starts reading ckpt-4."""
    restore_model = restore.restore_model

    def trainer_moves_on(path, hps, strategy=None):
        if path.endswith('ckpt-4'):
            for name in os.listdir(run.log_root):
                if name.startswith('ckpt-4.'):
                    os.rename(os.path.join(run.log_root, name), os.path.join(run.log_root, 'ckpt-5' + name[6:]))
                elif name.startswith('ckpt-'):
                    os.remove(os.path.join(run.log_root, name))
            with open(os.path.join(run.log_root, 'checkpoint'), 'w') as f:
                f.write('model_checkpoint_path: "ckpt-5"\nall_model_checkpoint_paths: "ckpt-5"\n')
            raise tf.errors.NotFoundError(None, None, f'{path}.index not found')
        return restore_model(path, hps, strategy)

    monkeypatch.setattr(restore, 'restore_model', trainer_moves_on)
    metrics = evaluation.evaluate_checkpoints(dataclasses.replace(run, eval_once=True))
    assert metrics['checkpoint'] == os.path.join(run.log_root, 'ckpt-5')


def test_train_and_eval_owns_its_eval_folder_from_the_start_even_when_it_is_log_root(run, monkeypatch):
    config = dataclasses.replace(_extended(run, 6), eval_dir=run.log_root, eval_every_steps=1)
    save = tf.train.CheckpointManager.save
    owners = []

    def save_and_look(self, checkpoint_number=None, **kwargs):
        with open(os.path.join(config.log_root, 'owner.json')) as f:
            owners.append(json.load(f)['pid'])
        return save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save_and_look)
    assert training.train(config, evaluate=True).step == 6
    assert owners == [os.getpid()] * 2
    assert [row['step'] for row in evaluation.read_history(config.log_root)] == [5, 6]
    assert not os.path.exists(os.path.join(config.log_root, 'owner.json')), 'released at the end'


def test_train_and_eval_claims_eval_at_once_and_goes_on_when_an_eval_fails(run, monkeypatch, caplog):
    """eval/ is claimed before the first step, so an eval watcher started beside it is the one
    refused; an eval that cannot write its report warns, and the checkpoints go on."""
    write_json, save = json_files.write_json, tf.train.CheckpointManager.save
    claimed = []

    def full_disk_for_metrics(path, values, newest=None):
        if path.endswith('metrics.json'):
            raise errors.write_failed(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), newest)
        return write_json(path, values, newest)

    def save_and_look(self, checkpoint_number=None, **kwargs):
        claimed.append(os.path.exists(os.path.join(run.eval_folder, 'owner.json')))
        return save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(json_files, 'write_json', full_disk_for_metrics)
    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save_and_look)
    config = dataclasses.replace(_extended(run, 6), eval_every_steps=1)
    assert training.train(config, evaluate=True).step == 6
    assert claimed == [True, True]
    assert checkpoint_steps(run.log_root) == [2, 3, 4, 5, 6]
    assert caplog.text.count('failed, training goes on: cannot write') == 2, caplog.text
