"""Several trainer processes as the workers of one MultiWorkerMirroredStrategy cluster on 127.0.0.1,
for the tests that need what only separate processes show."""

import json
import os
import socket
import subprocess
import sys
import time

from conftest import ROOT


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Workers:
    """resnet_main.py ARGS as the workers of a cluster of `count` on 127.0.0.1, started by start();
    their temporary folders go to `tmp` (TMPDIR); each one's output goes to a file, read by output()."""

    def __init__(self, folder, *args, count=2, tmp=None):
        self.folder, self.tmp = folder, tmp
        self.args = ('--distribution_strategy=multi_worker_mirrored', *args)
        self.cluster = {'worker': [f'127.0.0.1:{port}' for port in free_ports(count)]}
        self.processes = [None] * count
        self.runs = 0

    def start(self, *indices, extra=()):
        """Starts the workers `indices` (default: all), with `extra` arguments."""
        self.runs += 1
        for index in indices or range(len(self.processes)):
            task = {'cluster': self.cluster, 'task': {'type': 'worker', 'index': index}}
            env = {**os.environ, 'TF_CONFIG': json.dumps(task), **({'TMPDIR': str(self.tmp)} if self.tmp else {})}
            with open(self._log(index), 'w') as log:
                command = [sys.executable, os.path.join(ROOT, 'resnet_main.py'), *self.args, *extra]
                self.processes[index] = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
                )

    def _log(self, index):
        return os.path.join(self.folder, f'worker-{index}.run-{self.runs}.log')

    def output(self, index):
        with open(self._log(index)) as f:
            return f.read()

    def wait_for(self, index, text, timeout=300):
        """Waits until worker `index` has printed `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.output(index):
            assert time.monotonic() < deadline, f'no {text!r} from worker {index}:\n{self.output(index)}'
            assert self.processes[index].poll() is None, f'worker {index} ended:\n{self.output(index)}'
            time.sleep(0.2)

    def finish(self, *indices, timeout=300):
        """The exit codes of the workers `indices` (default: all started), killing any still running after `timeout`."""
        codes = []
        for index in indices or [i for i, p in enumerate(self.processes) if p]:
            try:
                codes.append(self.processes[index].wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                self.processes[index].kill()
                raise AssertionError(f'worker {index} still ran after {timeout} s:\n{self.output(index)}') from None
        return codes

    def kill_all(self):
        for process in self.processes:
            if process and process.poll() is None:
                process.kill()
                process.wait()
