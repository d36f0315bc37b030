"""Several workers on 127.0.0.1 and their faults: a stop sent to each of them at slightly different
times, a worker killed mid-run, a worker that never starts. Nothing lost, no traceback, and nothing
left in the temporary folder once the workers start again; the workers stay in step and only the
chief writes."""

import dataclasses
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

from resnet_cifar import cluster_rendezvous, evaluation, ownership, run_folder, worker_faults
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


def _event_file_pids(folder):
    """The process ids in the names of the event files in `folder` (events.out.tfevents.TIME.HOST.PID.N.v2)."""
    return {int(name.split('.')[-3]) for name in os.listdir(folder) if name.startswith('events.out.tfevents.')}


@pytest.fixture(scope='module')
def stopped_lost_and_resumed(subset, tmp_path_factory):
    """Two workers on 127.0.0.1, three times with the same commands: stopped by a signal to each,
    SIGTERM to worker 1 then SIGINT to worker 0 0.3 s later; resumed until worker 1 is killed after
    its second checkpoint; resumed again to two steps past the newest checkpoint. One cluster's
    story, so each start is paid once."""
    folder = tmp_path_factory.mktemp('cluster')
    (folder / 'tmp').mkdir()
    log_root = folder / 'run'
    args = tiny_train_args(subset, log_root, '--train_steps=100000', '--summary_every_steps=5')
    workers = Workers(folder, *args, tmp=folder / 'tmp')
    chief_pids, story = [], {'log_root': log_root, 'tmp': folder / 'tmp', 'cluster': workers.cluster}
    try:
        workers.start(extra=['--checkpoint_every_steps=100000'])
        chief_pids.append(workers.processes[0].pid)
        workers.wait_for(0, 'step 10/')
        workers.processes[1].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        workers.processes[0].send_signal(signal.SIGINT)
        story['stop_codes'] = workers.finish(timeout=120)
        story['stop_outputs'] = [workers.output(i) for i in (0, 1)]
        story['stop_checkpoints'] = checkpoint_steps(log_root)
        story['stop_worker_folders'] = _worker_folders(folder / 'tmp')

        every = 5
        second_save = (max(story['stop_checkpoints']) // every + 2) * every
        workers.start(extra=[f'--checkpoint_every_steps={every}'])
        chief_pids.append(workers.processes[0].pid)
        workers.wait_for(0, 'saved ' + str(log_root / f'ckpt-{second_save}'))
        workers.processes[1].kill()
        lost = time.monotonic()
        story['lost_codes'] = workers.finish(0, timeout=120)
        story['stopped_after'] = time.monotonic() - lost
        story['newest'] = newest = max(checkpoint_steps(log_root))
        story['lost_output'] = workers.output(0)
        story['lost_worker_folders'] = _worker_folders(folder / 'tmp')

        workers.start(extra=[f'--checkpoint_every_steps={every}', f'--train_steps={newest + 2}'])
        chief_pids.append(workers.processes[0].pid)
        story['resume_codes'] = workers.finish(timeout=300)
    finally:
        workers.kill_all()
    story['resume_outputs'] = [workers.output(i) for i in (0, 1)]
    story['chief_pids'] = chief_pids
    return story


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_stop_sent_to_each_worker_saves_one_step_they_agree_on(stopped_lost_and_resumed):
    """Each worker ends with 128 + its signal's number, and both save the same step."""
    story = stopped_lost_and_resumed
    assert story['stop_codes'] == [130, 143], story['stop_outputs']
    stops = [re.search(r'stopped by (SIG\w+) at step (\d+)', output) for output in story['stop_outputs']]
    assert [stop.group(1) for stop in stops] == ['SIGINT', 'SIGTERM']
    step = int(stops[0].group(2))
    assert int(stops[1].group(2)) == step and step >= 10
    assert story['stop_checkpoints'] == [step]
    assert not any('Traceback' in output for output in story['stop_outputs'])
    assert story['stop_worker_folders'] == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_lost_worker_stops_the_other_in_one_line_and_the_same_commands_resume(stopped_lost_and_resumed):
    story = stopped_lost_and_resumed
    log_root, newest = story['log_root'], story['newest']
    assert story['lost_codes'] == [2], story['lost_output']
    line = _error_line(story['lost_output'])
    assert f'worker 1 ({story["cluster"]["worker"][1]}) stopped answering' in line, line
    assert f'the newest complete checkpoint is {log_root}/ckpt-{newest}' in line, line
    assert 'start every worker again with the same commands' in line, line
    assert story['stopped_after'] < 60
    assert story['lost_worker_folders'], 'the killed worker could not remove its folders'

    assert story['resume_codes'] == [0, 0], story['resume_outputs']
    assert f'from step {newest} to {newest + 2}' in story['resume_outputs'][0]
    assert _worker_folders(story['tmp']) == [], 'removed when the workers started again'


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_workers_train_in_step_and_only_the_chief_writes(stopped_lost_and_resumed):
    """The workers end with the same weights; the run folder holds the chief's files alone (the
    summaries of each of its starts), and its last checkpoint evaluates."""
    story = stopped_lost_and_resumed
    log_root, end = story['log_root'], story['newest'] + 2
    done = rf'training done at step {end}; weights digest (\w+)'
    digests = [re.search(done, output).group(1) for output in story['resume_outputs']]
    assert digests[0] == digests[1]
    names = set(os.listdir(log_root))
    assert {'checkpoint', 'hparams.json', 'train', f'ckpt-{end}.index', f'ckpt-{end}.data-00000-of-00001'} <= names
    assert all(name in ('checkpoint', 'hparams.json', 'train') or name.startswith('ckpt-') for name in names), names
    assert _event_file_pids(log_root / 'train') == set(story['chief_pids'])

    config = dataclasses.replace(run_folder.read_config(str(log_root)), eval_once=True)
    metrics = evaluation.evaluate_checkpoints(config)
    assert metrics['step'] == end and metrics['num_examples'] == 1017
