"""Workers of a cluster (tf.distribute.MultiWorkerMirroredStrategy) that go wrong mid-run, and the
temporary folders of the workers other than the chief (cluster_rendezvous has them meet at start-up;
stop_requests has them stop at one step).

- A worker lost mid-run: TensorFlow's coordination service notices it within its heartbeat timeout
  (docs/robustness.md has the measured times) and aborts the collectives; that error becomes one
  line naming the lost worker.
- The workers other than the chief save into a temporary folder of their own, claimed like a run
  folder, so that one left by a killed worker is removed when a worker starts again.
"""

import contextlib
import os
import re
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from resnet_cifar import checkpoint_index, errors, ownership
from resnet_cifar.cluster_rendezvous import cluster_tasks, task_name
from resnet_cifar.errors import UserError

WORKER_FOLDER_PREFIX = 'resnet-worker-'
# The errors TensorFlow raises in a worker when a peer is gone: its collectives are aborted.
PEER_LOST = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)
TASK = re.compile(r'/job:(\w+)/replica:\d+/task:(\d+)')


class WorkerLost(UserError):
    """A worker of the cluster died or stopped answering; the message says which, and how to resume."""


# ---------------------------------------------------------------------------
# A stop every worker agrees on.


# ---------------------------------------------------------------------------
# A worker lost mid-run.


@contextlib.contextmanager
def peers_watched(log_root):
    """Within `with`, a peer lost mid-run (TensorFlow aborts the collectives) becomes a WorkerLost
    line naming it and the newest checkpoint of log_root, which the same commands resume from."""
    cluster = cluster_tasks()
    try:
        yield
    except PEER_LOST as e:
        if cluster is None:
            raise
        tasks, me = cluster
        named = [(job, int(index)) for job, index in TASK.findall(e.message or '')]
        lost = [task for task in tasks if task[:2] in named and task[:2] != me]
        who = ', '.join(map(task_name, lost)) if lost else 'a worker'
        newest = (checkpoint_index.checkpoints(log_root) or ['none'])[0]
        raise WorkerLost(
            f'{who} stopped answering ({_reason(e)}); the newest complete checkpoint is {newest}; start every '
            'worker again with the same commands to resume from it'
        ) from None


def _reason(error):
    """What TensorFlow says about the lost peer, in a few words."""
    message = error.message or ''
    if 'stopped sending heartbeats' in message:
        return 'it stopped sending heartbeats'
    aborted = re.search(r'aborted by: *(.+)', message)
    return (aborted.group(1) if aborted else errors.reason(error)).strip().rstrip(':')


# ---------------------------------------------------------------------------
# The temporary folders of the workers other than the chief.


@contextlib.contextmanager
def worker_folder(mode):
    """A new temporary folder for this worker's saves, owned by it and removed when it ends
    however it ends short of kill -9; one that a killed worker left is removed here."""
    _remove_abandoned(tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix=WORKER_FOLDER_PREFIX)
    try:
        with ownership.Ownership(folder, mode, 'log_root'):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(parent):
    for name in os.listdir(parent):
        folder = os.path.join(parent, name)
        if not name.startswith(WORKER_FOLDER_PREFIX) or not os.path.isdir(folder):
            continue
        try:
            record = ownership.read_record(os.path.join(folder, ownership.OWNER))
        except (OSError, UserError):
            continue  # not one of ours, or being made this instant
        if ownership.still_running(record) is False:
            logging.info('removing %s, left by worker process %d', folder, record['pid'])
            shutil.rmtree(folder, ignore_errors=True)
