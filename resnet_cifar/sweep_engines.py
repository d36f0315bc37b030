"""Where a sweep's trainers run, each trial `python -m resnet_main ...` in its own process with its
output appended to a log: LocalEngine, a pool of processes on this machine, or RayEngine, Ray
actors on a local Ray cluster or on one joined at an address.

    for event in engine.run(jobs):  # Started, then Ended with the exit code, for each job
        ...

Closing run()'s generator (Ctrl-C, SIGTERM, an error in the driver) stops every trainer with
SIGTERM, so that each saves a checkpoint; running the same jobs again resumes them. Nothing here
imports TensorFlow: a Ray node only starts and stops processes.
"""

import dataclasses
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

from resnet_cifar import choices, process_settings, startup
from resnet_cifar.errors import UserError

THREAD_VARIABLES = ('OMP_NUM_THREADS', 'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS')


@dataclasses.dataclass(frozen=True)
class Job:
    """One trainer to run: resnet_main.py's flags, and the log its output is appended to."""

    name: str
    args: tuple
    log: str


@dataclasses.dataclass(frozen=True)
class Event:
    """A job started (`ended` False, `outcome` the host it runs on) or ended (`outcome` its exit code,
    or, as text, why the engine lost it), at `time` (seconds since the epoch)."""

    job: Job
    ended: bool
    outcome: int | str | None = None
    time: float = dataclasses.field(default_factory=time.time)


def start_trainer(job, threads=None):
    """Starts the job's trainer with this Python, in a session of its own (a Ctrl-C in the terminal
    reaches the driver, which stops it), with `threads` CPU threads unless the environment says."""
    env = startup.child_environment()
    for name in THREAD_VARIABLES if threads else ():
        env.setdefault(name, str(threads))
    command = [sys.executable, '-m', 'resnet_main', *job.args]
    os.makedirs(os.path.dirname(job.log) or '.', exist_ok=True)
    with open(job.log, 'a') as log:
        log.write(f'--- {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} on {socket.gethostname()}: ')
        log.write(f'{shlex.join(command)}\n')
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_trainers(processes):
    """SIGTERM to each trainer (it saves a checkpoint, then exits), then waits for all of them."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait()


class LocalEngine:
    """Up to `parallel` trainers at a time on this machine, sharing its CPU threads."""

    def check(self):
        """Nothing to check: this machine runs the trials."""

    def __init__(self, parallel=1):
        if parallel < 1:
            raise UserError(f'expected a positive integer, got {parallel!r}', 'parallel')
        self.parallel = parallel
        self.threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else None

    def run(self, jobs):
        pending, running = list(jobs), {}
        try:
            while pending or running:
                while pending and len(running) < self.parallel:
                    job = pending.pop(0)
                    running[job] = start_trainer(job, self.threads)
                    yield Event(job, ended=False)
                ended = next((job for job, process in running.items() if process.poll() is not None), None)
                if ended is None:
                    time.sleep(0.5)
                    continue
                yield Event(ended, ended=True, outcome=running.pop(ended).returncode)
        finally:
            stop_trainers(list(running.values()))


class TrialProcess:
    """A Ray actor running one trainer on its node, as LocalEngine runs one here; stop() may come
    before, during or after start()."""

    def __init__(self):
        self.process, self.stopped, self.lock = None, False, threading.Lock()
        self.settled = threading.Event()  # start() is over, whether it started the trainer or not

    def start(self, job, threads):
        try:
            with self.lock:
                if not self.stopped:
                    self.process = start_trainer(job, threads)
        finally:
            self.settled.set()
        return socket.gethostname(), time.time()

    def wait(self):
        """The trainer's exit code; None if it was never started (stopped first, or start() failed)."""
        self.settled.wait()
        return self.process and self.process.wait()

    def stop(self):
        with self.lock:
            self.stopped = True
            if self.process:
                stop_trainers([self.process])


def _check_reachable(address):
    """A HOST:PORT address that nothing answers at is refused at once (Ray itself retries for minutes)."""
    host, _, port = (address or '').rpartition(':')
    if not host or not port.isdigit() or '://' in address:
        return  # none (a local cluster), 'auto', or ray://: Ray's to find
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        reason = e.strerror or e
        raise UserError(f'nothing answers at {address} ({reason}); start the cluster first', 'ray_address') from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f'Ray is not installed; install it with: {choices.install_command("ray")}', 'engine') from None
    return ray


class RayEngine:
    """Each trial in a Ray actor holding `trial_cpus` CPUs and `trial_gpus` GPUs, on a local Ray
    cluster started here (address None) or on the cluster at `address`. Every node needs the project
    installed and the data and the sweep's root at the same paths as the driver (docs/sweeps.md)."""

    def __init__(self, address=None, trial_cpus=1, trial_gpus=0):
        if trial_cpus <= 0 or trial_gpus < 0:
            key, value = ('trial_cpus', trial_cpus) if trial_cpus <= 0 else ('trial_gpus', trial_gpus)
            raise UserError(f'expected a number {"> 0" if key == "trial_cpus" else ">= 0"}, got {value!r}', key)
        self.address, self.trial_cpus, self.trial_gpus = address, trial_cpus, trial_gpus
        self.ray = _import_ray()
        self.started_here = False  # whether check() started or joined the cluster, which run() then leaves

    def check(self):
        """Starts or joins the cluster and checks that a trial fits in it, before the sweep writes anything."""
        self.started_here = self._connect()
        self._check_resources()

    def _connect(self):
        """Starts or joins the cluster, unless this process is in one already; returns whether it did."""
        ray = self.ray
        if ray.is_initialized():
            return False
        _check_reachable(self.address)
        os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')  # nothing leaves the machine unless asked
        # Ray's signal handlers would end the driver without stopping the trials: ours are put back.
        # A local cluster's trainers get the user's environment.
        try:
            with (
                process_settings.signal_handlers(None),
                process_settings.environment(startup.child_environment(), True),
            ):
                ray.init(address=self.address, include_dashboard=False, logging_level='ERROR', log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f'the Ray cluster at {self.address}' if self.address else 'a local Ray cluster'
            raise UserError(f'cannot start or join {where}: {str(e).splitlines()[0]}', 'ray_address') from None
        return True

    def _check_resources(self):
        total = self.ray.cluster_resources()
        for key, asked, resource in (('trial_cpus', self.trial_cpus, 'CPU'), ('trial_gpus', self.trial_gpus, 'GPU')):
            if asked > total.get(resource, 0):
                raise UserError(
                    f'a trial asks for {asked:g} {resource}s; the Ray cluster has {total.get(resource, 0):g}', key
                )

    def run(self, jobs):
        ray = self.ray
        if not ray.is_initialized():
            self.check()
        actors, starts, waits, running = {}, {}, {}, set()  # starts: job -> ref; waits: ref -> job
        try:
            actor_class = ray.remote(max_concurrency=2, max_restarts=0)(TrialProcess)
            for job in jobs:
                actors[job] = actor_class.options(num_cpus=self.trial_cpus, num_gpus=self.trial_gpus).remote()
                starts[job] = actors[job].start.remote(job, max(1, int(self.trial_cpus)))
                waits[actors[job].wait.remote()] = job
            while waits:
                [ref], _ = ray.wait([*starts.values(), *waits], num_returns=1)
                job = waits.get(ref) or next(job for job, start in starts.items() if start == ref)
                if job in starts:  # its start first, also when its end is what came
                    started = self._result(starts.pop(job))
                    if isinstance(started, Exception):
                        del waits[next(r for r, j in waits.items() if j == job)]
                        ray.kill(actors.pop(job))
                        yield Event(job, ended=True, outcome=f'Ray could not start the trial: {started}')
                        continue
                    running.add(job)
                    yield Event(job, ended=False, outcome=started[0], time=started[1])
                    if ref not in waits:
                        continue
                del waits[ref]
                outcome = self._result(ref)
                if isinstance(outcome, Exception):
                    outcome = f'Ray lost the trial: {outcome}'
                running.discard(job)
                ray.kill(actors.pop(job))
                yield Event(job, ended=True, outcome=outcome)
        finally:
            self._stop(actors, starts, waits, running)
            if self.started_here:
                ray.shutdown()

    def _result(self, ref):
        """ray.get(ref), or the exception as one line's worth (a node lost, the actor died, a start failed)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            cause = getattr(e, 'cause', None) or e
            return RuntimeError(f'{type(cause).__name__}: {str(cause).strip().splitlines()[0]}')

    def _stop(self, actors, starts, waits, running):
        """Each running trainer is stopped with SIGTERM and waited for; actors not started are dropped."""
        ray = self.ray
        if starts:  # started, though not yet reported
            started, _ = ray.wait(list(starts.values()), num_returns=len(starts), timeout=0)
            running |= {job for job, ref in starts.items() if ref in started}
        for job in running:
            actors[job].stop.remote()
        for ref, job in waits.items():
            if job in running:
                self._result(ref)
        for actor in actors.values():
            ray.kill(actor)
