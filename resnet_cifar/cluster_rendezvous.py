"""Several workers meeting before TensorFlow starts (the cluster in TF_CONFIG).

Every worker meets the coordination leader (the chief, else worker 0) at its address before
TensorFlow's own set-up, which waits in C++ without a time limit and holding the interpreter, so
that signals go unanswered. This wait is Python's: it says so in one line, answers SIGINT and
SIGTERM, and gives up after `timeout` seconds naming the missing workers. Pure Python: no TensorFlow.
"""

import contextlib
import json
import os
import select
import socket
import time

from absl import logging

from resnet_cifar.errors import UserError


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


def task_name(task):
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
    others = ', '.join(task_name(task) for task in tasks if task[:2] != me)
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
            f'{", ".join(map(task_name, missing))} did not join the cluster within {timeout} s; start '
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
