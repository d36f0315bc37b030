"""Nothing lost when two processes share a folder, the disk fills, or a stop comes outside training."""

import errno
import json
import logging
import os
import socket
import subprocess
import uuid

import pytest
import tensorflow as tf
from conftest import as_flags, tiny_config

from resnet_cifar import ownership, trained_model, training
from resnet_cifar.errors import UserError


def _owner_record(log_root, process):
    """An owner record as a trainer writes it, for `process`."""
    os.makedirs(log_root, exist_ok=True)
    record = {
        'pid': process.pid,
        'host': socket.gethostname(),
        'started': '2026-11-23 09:00:00 UTC',
        'mode': 'train',
        'boot_id': ownership.boot_id(),
        'process_start': ownership.process_start(process.pid),
    }
    with open(os.path.join(log_root, 'owner.json'), 'w') as f:
        json.dump(record, f)


def test_a_second_trainer_on_a_folder_in_use_is_refused_before_writing(subset, tmp_path):
    config = tiny_config(tmp_path / 'run', subset, {'train_steps': 2})
    owner = subprocess.Popen(['sleep', '60'])
    try:
        _owner_record(config.log_root, owner)
        before = sorted(os.listdir(config.log_root))
        with pytest.raises(UserError) as error:
            training.train(config)
    finally:
        owner.kill()
    line = as_flags(error.value)
    assert line.startswith(f'--log_root: {config.log_root} is in use by train process {owner.pid}'), line
    assert socket.gethostname() in line and '2026-11-23 09:00:00' in line and 'another --log_root' in line
    assert sorted(os.listdir(config.log_root)) == before


def test_the_record_of_a_process_that_is_gone_is_taken_over(subset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    config = tiny_config(tmp_path / 'run', subset, {'train_steps': 2})
    gone = subprocess.Popen(['true'])
    gone.wait()
    _owner_record(config.log_root, gone)
    assert training.train(config).step == 2
    assert f'taking it over from train process {gone.pid}' in caplog.text and 'no longer running' in caplog.text
    assert not os.path.exists(os.path.join(config.log_root, 'owner.json')), 'released at the end'


def _assert_full_disk_stop(error, log_root, newest):
    line = as_flags(error)
    assert 'cannot write' in line and 'No space left on device' in line, line
    assert f'the newest complete checkpoint is {os.path.join(log_root, newest)}' in line, line
    assert not [name for name in os.listdir(log_root) if '_temp' in name or '.tmp' in name], os.listdir(log_root)
    assert tf.train.latest_checkpoint(log_root) == os.path.join(log_root, newest)


def test_a_save_that_fails_for_lack_of_space_stops_cleanly_and_resumes(subset, tmp_path, monkeypatch):
    config = tiny_config(tmp_path, subset, {'train_steps': 4}, checkpoint_every_steps=2)
    save = tf.train.CheckpointManager.save

    def full_disk_at_step_4(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:
            os.makedirs(os.path.join(self.directory, 'ckpt-4_temp'))  # what a real save begins with
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', full_disk_at_step_4)
    with pytest.raises(UserError) as error:
        training.train(config)
    _assert_full_disk_stop(error.value, config.log_root, 'ckpt-2')
    monkeypatch.undo()
    assert training.train(config).step == 4


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs, or a skip where this machine does not permit mounting one."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1500k', 'tmpfs', str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {result.stderr.decode().strip()}')
    yield mount
    subprocess.run(['umount', '--lazy', str(mount)], check=True)


def test_a_real_full_disk_stops_cleanly_and_the_run_resumes_once_there_is_room(subset, small_disk):
    """ResNet-8's checkpoints are about 0.6 MB: the third of them does not fit into 1.5 MB."""
    config = tiny_config(small_disk / 'run', subset, {'train_steps': 8}, checkpoint_every_steps=2)
    with pytest.raises(UserError) as error:
        training.train(config)
    newest = os.path.basename(tf.train.latest_checkpoint(config.log_root))
    _assert_full_disk_stop(error.value, config.log_root, newest)
    subprocess.run(['mount', '-o', 'remount,size=20m', str(small_disk)], check=True)
    assert training.train(config).step == 8


def test_an_export_stopped_halfway_leaves_no_folder(subset, tmp_path, monkeypatch):
    config = tiny_config(tmp_path / 'run', subset, {'train_steps': 1})
    training.train(config)

    def interrupted(module, folder, **kwargs):
        os.makedirs(os.path.join(folder, 'variables'))
        raise KeyboardInterrupt  # Ctrl-C halfway through writing the SavedModel

    monkeypatch.setattr(tf.saved_model, 'save', interrupted)
    export_dir = str(tmp_path / f'export-{uuid.uuid4().hex}')
    with pytest.raises(KeyboardInterrupt):
        trained_model.export(export_dir, config.log_root)
    assert sorted(os.listdir(tmp_path)) == ['run'], 'no SavedModel folder and no staging folder'
