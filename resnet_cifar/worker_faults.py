"""Several workers (tf.distribute.MultiWorkerMirroredStrategy, the cluster in TF_CONFIG) and what
goes wrong with them: a worker that does not start, a stop (SIGTERM, SIGINT) sent to one worker or
to all at slightly different times, and a worker that dies or hangs mid-run.

- At start-up every worker meets the coordination leader (the chief, else worker 0) at its address
  before TensorFlow's own set-up, which waits in C++ without a time limit and holding the
  interpreter, so that signals go unanswered. This wait is Python's: it says so in one line,
  answers SIGINT and SIGTERM, and gives up after `timeout` seconds naming the missing workers.
- A stop goes through tf.distribute.experimental.PreemptionCheckpointHandler: it agrees, through
  TensorFlow's coordination service, on the step every worker stops at. The handler is given a
  checkpoint of its own (its `checkpointed_runs` counter stays out of the run's checkpoints, which
  restore as before), a watcher of this process's stop request instead of its own SIGTERM handler
  (so SIGINT counts too), nothing to save and an exit that only reports: the trainer saves the
  agreed step itself, with its NaN check and failed-save clean-up, and exits 128 + the signal's
  number (143 on a worker that a peer's stop reached).
- A worker lost mid-run: TensorFlow's coordination service notices it within its heartbeat timeout
  (docs/robustness.md has the measured times) and aborts the collectives; that error becomes one
  line naming the lost worker.
- The workers other than the chief save into a temporary folder of their own, claimed like a run
  folder, so that one left by a killed worker is removed when a worker starts again.
"""

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import tempfile
import threading
import time

import tensorflow as tf
from absl import logging

from resnet_cifar import checkpoint_index, errors, ownership
from resnet_cifar.errors import UserError
from resnet_cifar.tf_quiet import tensorflow_warnings_off

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
# The cluster in TF_CONFIG.


def cluster_tasks(environ=os.environ):
    """(tasks, me): the `(job, index, address)` of every chief and worker task in TF_CONFIG, and
    this task's `(job, index)`; None without a cluster of several tasks."""
    text = environ.get('TF_CONFIG')
    if not text:
        return None
    try:
        tf_config = json.loads(text)
        me = (tf_config['task']['type'], int(tf_config['task']['index']))
        jobs = tf_config['cluster']
        tasks = [(job, i, address) for job in ('chief', 'worker') for i, address in enumerate(jobs.get(job, []))]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
            f'TF_CONFIG: expected {{"cluster": {{"worker": [HOST:PORT, ...]}}, "task": {{"type": "worker", "index": '
            f'N}}}}, got {text!r:.80} ({type(e).__name__}: {e})'
        ) from None
    if not any(me == (job, i) for job, i, _ in tasks):
        raise UserError(f'TF_CONFIG: task {me[0]} {me[1]} is not in the cluster {jobs}')
    return (tasks, me) if len(tasks) > 1 else None


def _name(task):
    job, index, address = task
    return f'{job} {index} ({address})'


def _split(address):
    host, _, port = address.rpartition(':')
    return host.strip('[]'), int(port)


def wait_for_cluster(timeout, environ=os.environ):
    """Returns once every chief and worker task of TF_CONFIG runs this function too; raises a
    UserError naming the missing ones after `timeout` seconds. Call it before the strategy is made."""
    cluster = cluster_tasks(environ)
    if cluster is None:
        return
    tasks, me = cluster
    leader = tasks[0]  # TensorFlow's coordination leader: the chief, else worker 0
    others = ', '.join(_name(task) for task in tasks if task[:2] != me)
    logging.info(
        'waiting for the cluster: this is %s %d; the others are %s (giving up after %d s)', *me, others, timeout
    )
    deadline = time.monotonic() + timeout
    if me == leader[:2]:
        missing = _gather(_split(leader[2])[1], [task for task in tasks if task != leader], deadline)
    else:
        missing = _join(leader, me, deadline)
    if missing:
        raise UserError(
            f'{", ".join(map(_name, missing))} did not join the cluster within {timeout} s; start '
            f'{"it" if len(missing) == 1 else "them"} with its TF_CONFIG, or raise cluster_timeout_secs',
            'cluster_timeout_secs',
            ['cluster_timeout_secs'],
        )
    logging.info('the cluster is complete: %d workers', len(tasks))


def _gather(port, others, deadline):
    """The leader's side: accepts each other task's hello, then tells them all to go on. Returns
    the tasks still missing at the deadline."""
    expected = {f'{job}:{index}' for job, index, _ in others}
    joined = {}
    try:
        server = socket.create_server(('', port))
    except OSError as e:
        raise UserError(f"TF_CONFIG: cannot listen on port {port}, this worker's: {e.strerror}") from None
    with server:
        server.settimeout(0.5)
        while time.monotonic() < deadline:
            _forget_the_gone(joined)
            if expected <= set(joined):
                break
            try:
                connection, _ = server.accept()
                connection.settimeout(2)
                hello = connection.recv(64).decode(errors='replace').strip()
            except OSError:  # mostly TimeoutError: no one this half second
                continue
            if hello in joined:
                joined[hello].close()  # that worker started again
            joined[hello] = connection
        missing = [task for task in others if f'{task[0]}:{task[1]}' not in joined]
        for connection in joined.values():
            with contextlib.suppress(OSError):
                if not missing:
                    connection.sendall(b'go\n')
                    connection.recv(8)  # the other side closes first: the port is free for TensorFlow at once
            connection.close()
    return missing


def _forget_the_gone(joined):
    """Drops the workers whose connection closed while they waited: they died or started again."""
    readable, _, _ = select.select(list(joined.values()), [], [], 0)
    for hello, connection in list(joined.items()):
        if connection in readable:
            try:
                gone = not connection.recv(8, socket.MSG_PEEK)
            except OSError:
                gone = True
            if gone:
                connection.close()
                del joined[hello]


def _join(leader, me, deadline):
    """Another task's side: says hello to the leader until it answers go. Returns [leader] if it
    did not by the deadline."""
    address = _split(leader[2])
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1) as connection:
                connection.sendall(f'{me[0]}:{me[1]}\n'.encode())
                connection.settimeout(0.5)
                while time.monotonic() < deadline:
                    try:
                        answer = connection.recv(8)
                    except TimeoutError:
                        continue
                    if answer.startswith(b'go'):
                        return []
                    break  # the leader went away: say hello again
        except OSError:
            time.sleep(0.5)  # the leader is not listening yet
    return [leader]


# ---------------------------------------------------------------------------
# A stop every worker agrees on.


class StopRequest:
    """Within `with`, SIGTERM and SIGINT become a request the training loop honours where it
    checks: poll() takes the request in, once per check, and returns the signal's name or None;
    `signal` is what the last poll() found, and reading it changes nothing."""

    def __enter__(self):
        self.signal = self.asked = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.asked = signal.Signals(signum).name

    def poll(self):
        """The stop to honour now: the signal's name, or None."""
        self.signal = self.signal or self.asked
        return self.signal

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _AgreedStop(Exception):
    """The handler's exit: every worker has reached the agreed step."""


class ClusterStopRequest:
    """StopRequest for several workers: a stop asked of any of them is honoured by all at one check.
    Each poll() is a step to PreemptionCheckpointHandler, so every worker polls at the same steps;
    `signal` is what the last poll() found, and reading it changes nothing."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.asked = self.signal = None
        self._folder = worker_folder('preemption')  # the handler's own checkpoint, never saved
        folder = self._folder.__enter__()
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self.asked is not None,
            exit_fn=self._agreed,
            grace_period=0,
            save_fn=lambda: None,  # the trainer saves the agreed step itself
        )
        # The handler asks the GCE metadata server whether it runs on GCP (where it would not
        # handle CPU workers at all): the address given is this machine's, where nothing answers.
        _quiet_handler_threads()
        with _environment(GCE_METADATA_IP='127.0.0.1:1'):
            self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                self.strategy.cluster_resolver, tf.train.Checkpoint(), os.path.join(folder, 'handler'), config
            )
        return self

    def _handle(self, signum, frame):
        self.asked = signal.Signals(signum).name

    def _agreed(self):
        raise _AgreedStop

    def poll(self):
        """None, or from the agreed check on the name of the signal (SIGTERM when a peer's stop
        reached this worker)."""
        if self.signal is None and self.handler is not None:  # after `with`: as it was left
            try:
                with tensorflow_warnings_off():  # a deprecation inside the handler
                    self.handler.save_checkpoint_if_preempted()
            except _AgreedStop:
                self.signal = self.asked or 'SIGTERM'
        return self.signal

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if exc[0] is None or not issubclass(exc[0], PEER_LOST + (WorkerLost,)):
            self.handler = None  # its watcher threads end; with a peer lost they could wait for it forever
        self._folder.__exit__(*exc)


def _quiet_handler_threads():
    """The handler's watcher threads ask the coordination service for keys; with a peer lost they
    raise, and Python would print their tracebacks: the main thread's WorkerLost line says it."""
    if getattr(threading.excepthook, 'handler_threads_quiet', False):
        return
    previous = threading.excepthook

    def hook(args):
        watcher = (args.thread.name or '').startswith(('PeerTerminationWatcher', 'WorkerTerminationSignalWatcher'))
        if not (watcher and issubclass(args.exc_type, PEER_LOST)):
            previous(args)

    hook.handler_threads_quiet = True
    threading.excepthook = hook


def stop_request(strategy):
    """The StopRequest for `strategy`: across the cluster for several workers."""
    if cluster_tasks() is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return StopRequest()
    return ClusterStopRequest(strategy)


@contextlib.contextmanager
def _environment(**values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
        who = ', '.join(map(_name, lost)) if lost else 'a worker'
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
