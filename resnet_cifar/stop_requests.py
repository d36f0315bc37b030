"""A stop asked of a training run (SIGTERM, SIGINT), honoured where the loop checks, and on several
workers at one step they all agree on.

A stop among several workers goes through tf.distribute.experimental.PreemptionCheckpointHandler: it
agrees, through TensorFlow's coordination service, on the step every worker stops at. The handler
is given a checkpoint of its own (its `checkpointed_runs` counter stays out of the run's checkpoints,
which restore as before), a watcher of this process's stop request instead of its own SIGTERM
handler (so SIGINT counts too), nothing to save and an exit that only reports: the trainer saves the
agreed step itself, with its NaN check and failed-save clean-up, and exits 128 + the signal's number
(143 on a worker that a peer's stop reached).
"""

import contextlib
import os
import signal

import tensorflow as tf

from resnet_cifar import process_settings
from resnet_cifar.cluster_rendezvous import cluster_tasks
from resnet_cifar.tf_quiet import tensorflow_warnings_off
from resnet_cifar.worker_faults import PEER_LOST, WorkerLost, worker_folder


class StopRequest:
    """Within `with`, SIGTERM and SIGINT become a request the training loop honours where it
    checks: poll() takes the request in, once per check, and returns the signal's name or None;
    `signal` is what the last poll() found, and reading it changes nothing."""

    def __enter__(self):
        self.signal = self.asked = None
        self._settings = contextlib.ExitStack()
        self._settings.enter_context(process_settings.signal_handlers(self._handle))
        return self

    def _handle(self, signum, frame):
        self.asked = signal.Signals(signum).name

    def poll(self):
        """The stop to honour now: the signal's name, or None."""
        self.signal = self.signal or self.asked
        return self.signal

    def __exit__(self, *exc):
        self._settings.__exit__(*exc)


class _AgreedStop(Exception):
    """The handler's exit: every worker has reached the agreed step."""


class ClusterStopRequest(StopRequest):
    """StopRequest for several workers: a stop asked of any of them is honoured by all at one check.
    Each poll() is a step to PreemptionCheckpointHandler, so every worker polls at the same steps;
    `signal` is what the last poll() found, and reading it changes nothing."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        super().__enter__()
        folder = self._settings.enter_context(worker_folder('preemption'))  # the handler's own checkpoint
        # With a peer lost, the handler's watcher threads raise; the main thread's WorkerLost line says it.
        self._quiet = process_settings.thread_exceptions_filtered(_handler_thread_lost)
        self._quiet.__enter__()
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self.asked is not None,
            exit_fn=self._agreed,
            grace_period=0,
            save_fn=lambda: None,  # the trainer saves the agreed step itself
        )
        # The handler asks the GCE metadata server whether it runs on GCP (where it would not
        # handle CPU workers at all): the address given is this machine's, where nothing answers.
        with process_settings.environment({'GCE_METADATA_IP': '127.0.0.1:1'}):
            self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                self.strategy.cluster_resolver, tf.train.Checkpoint(), os.path.join(folder, 'handler'), config
            )
        return self

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
        peer_lost = exc[0] is not None and issubclass(exc[0], PEER_LOST + (WorkerLost,))
        if not peer_lost:
            self.handler = None  # its watcher threads end; with a peer lost they could wait for it forever
            self._quiet.__exit__(*exc)  # with a peer lost they may still raise: quiet until the process ends
        super().__exit__(*exc)


def _handler_thread_lost(args):
    """Whether a thread's exception is a preemption watcher's finding its peer gone."""
    watcher = (args.thread.name or '').startswith(('PeerTerminationWatcher', 'WorkerTerminationSignalWatcher'))
    return watcher and issubclass(args.exc_type, PEER_LOST)


def stop_request(strategy):
    """The StopRequest for `strategy`: across the cluster for several workers."""
    if cluster_tasks() is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return StopRequest()
    return ClusterStopRequest(strategy)
