"""Several workers on 127.0.0.1 and their faults: a stop sent to each of them at slightly different
times, a worker killed mid-run, a worker that never starts. Nothing lost, no traceback, and nothing
left in the temporary folder once the workers start again."""

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest
from conftest import as_flags, checkpoint_steps, tiny_train_args
from workers import Workers, free_ports

from resnet_cifar import cluster_rendezvous, ownership, worker_faults
from resnet_cifar.errors import UserError


def _tf_config(cluster, index):
    return {'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}})}


def _worker_folders(tmp):
    """The workers' folders in `tmp` (TensorFlow's autograph leaves files of its own there)."""
    return [name for name in os.listdir(tmp) if name.startswith(worker_faults.WORKER_FOLDER_PREFIX)]


def _error_line(output):
    assert 'Traceback' not in output, output
    lines = [line for line in output.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, output
    return lines[0]


def test_the_workers_meet_before_tensorflow_starts_and_a_missing_one_is_named():
    cluster = {'worker': [f'127.0.0.1:{port}' for port in free_ports(3)]}
    others = [
        threading.Thread(target=cluster_rendezvous.wait_for_cluster, args=(60, _tf_config(cluster, i))) for i in (1, 2)
    ]
    for thread in others:
        thread.start()
    cluster_rendezvous.wait_for_cluster(60, _tf_config(cluster, 0))
    for thread in others:
        thread.join(timeout=10)
        assert not thread.is_alive()

    started = time.monotonic()
    with pytest.raises(UserError) as error:
        cluster_rendezvous.wait_for_cluster(1, _tf_config(cluster, 0))
    assert time.monotonic() - started < 5
    line = as_flags(error.value)
    assert line.startswith(f'--cluster_timeout_secs: worker 1 ({cluster["worker"][1]}), worker 2 ('), line
    assert 'did not join the cluster within 1 s' in line and 'raise --cluster_timeout_secs' in line


def test_a_tf_config_that_names_no_cluster_is_one_line():
    with pytest.raises(UserError, match='TF_CONFIG: expected'):
        cluster_rendezvous.cluster_tasks({'TF_CONFIG': '{"cluster": '})
    with pytest.raises(UserError, match='TF_CONFIG: task worker 3 is not in the cluster'):
        cluster_rendezvous.cluster_tasks(_tf_config({'worker': ['127.0.0.1:1', '127.0.0.1:2']}, 3))


def test_a_folder_left_by_a_killed_worker_is_removed_when_a_worker_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    gone = subprocess.Popen(['true'])
    gone.wait()
    abandoned = tmp_path / f'{worker_faults.WORKER_FOLDER_PREFIX}abandoned'
    abandoned.mkdir()
    (abandoned / 'ckpt-5.index').write_text('left by a killed worker')
    (abandoned / 'owner.json').write_text(json.dumps({**ownership.this_process('train'), 'pid': gone.pid}))
    running = tmp_path / f'{worker_faults.WORKER_FOLDER_PREFIX}running'
    running.mkdir()
    (running / 'owner.json').write_text(json.dumps(ownership.this_process('train')))
    unknown = tmp_path / f'{worker_faults.WORKER_FOLDER_PREFIX}unknown'
    unknown.mkdir()
    with worker_faults.worker_folder('train') as folder:
        assert sorted(_worker_folders(tmp_path)) == sorted([running.name, unknown.name, os.path.basename(folder)])
        assert json.loads((tmp_path / folder / 'owner.json').read_text())['pid'] == os.getpid()
    assert sorted(_worker_folders(tmp_path)) == [running.name, unknown.name], 'its own is gone too'


@pytest.mark.multiprocess
def test_a_worker_waiting_for_the_cluster_says_so_and_honours_sigterm(subset, tmp_path):
    workers = Workers(tmp_path, *tiny_train_args(subset, tmp_path / 'run'))
    try:
        workers.start(1)
        workers.wait_for(1, 'waiting for the cluster')
        workers.processes[1].send_signal(signal.SIGTERM)
        assert workers.finish(1, timeout=60) == [143]
    finally:
        workers.kill_all()
    output = workers.output(1)
    assert 'Traceback' not in output and 'stopped by SIGTERM' in output, output
    assert (
        f'waiting for the cluster: this is worker 1; the others are worker 0 ({workers.cluster["worker"][0]})' in output
    )
    assert not os.path.exists(tmp_path / 'run'), 'nothing written'


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_stop_sent_to_each_worker_saves_one_step_they_agree_on(subset, tmp_path):
    """SIGTERM to worker 1, then SIGINT to worker 0 0.3 s later: both save the same step and end
    with 128 + their signal's number."""
    (tmp_path / 'tmp').mkdir()
    args = tiny_train_args(subset, tmp_path / 'run', '--train_steps=100000', '--summary_every_steps=5')
    workers = Workers(tmp_path, *args, '--checkpoint_every_steps=100000', tmp=tmp_path / 'tmp')
    try:
        workers.start()
        workers.wait_for(0, 'step 10/')
        workers.processes[1].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        workers.processes[0].send_signal(signal.SIGINT)
        codes = workers.finish(timeout=120)
    finally:
        workers.kill_all()
    assert codes == [130, 143]
    stops = [re.search(r'stopped by (SIG\w+) at step (\d+)', workers.output(i)) for i in (0, 1)]
    assert [stop.group(1) for stop in stops] == ['SIGINT', 'SIGTERM']
    step = int(stops[0].group(2))
    assert int(stops[1].group(2)) == step and step >= 10
    assert checkpoint_steps(tmp_path / 'run') == [step]
    assert not any('Traceback' in workers.output(i) for i in (0, 1))
    assert _worker_folders(tmp_path / 'tmp') == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_lost_worker_stops_the_other_in_one_line_and_the_same_commands_resume(subset, tmp_path):
    (tmp_path / 'tmp').mkdir()
    log_root = tmp_path / 'run'
    args = tiny_train_args(subset, log_root, '--train_steps=100000', '--summary_every_steps=5')
    workers = Workers(tmp_path, *args, '--checkpoint_every_steps=5', tmp=tmp_path / 'tmp')
    try:
        workers.start()
        workers.wait_for(0, 'saved ' + str(log_root / 'ckpt-10'))
        workers.processes[1].kill()
        lost = time.monotonic()
        assert workers.finish(0, timeout=120) == [2]
        stopped_after = time.monotonic() - lost
        newest = max(checkpoint_steps(log_root))
        line = _error_line(workers.output(0))
        assert f'worker 1 ({workers.cluster["worker"][1]}) stopped answering' in line, line
        assert f'the newest complete checkpoint is {log_root}/ckpt-{newest}' in line, line
        assert 'start every worker again with the same commands' in line, line
        assert stopped_after < 60
        assert _worker_folders(tmp_path / 'tmp'), 'the killed worker could not remove its folders'

        workers.start(extra=[f'--train_steps={newest + 2}'])
        assert workers.finish(timeout=300) == [0, 0]
    finally:
        workers.kill_all()
    assert f'from step {newest} to {newest + 2}' in workers.output(0)
    assert _worker_folders(tmp_path / 'tmp') == [], 'removed when the workers started again'
