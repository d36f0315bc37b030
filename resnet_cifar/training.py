"""Training: takes a run from a fresh start, or from its newest checkpoint, to train_steps.

    result = training.train(config)    # config: a run_config.RunConfig

`train` reads top to bottom: the training state and the checkpoints that hold it, a resume, then
the steps: every N steps a progress line, every N a checkpoint, every N an eval; they end when
asked (SIGINT, SIGTERM), with the current step saved, or at train_steps.
"""

import collections
import contextlib
import hashlib
import json
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import (
    atomic_write,
    checkpoint_index,
    device_input,
    devices,
    errors,
    evaluation,
    fast_network,
    ownership,
    resume,
    run_folder,
    stop_requests,
    train_state,
    worker_faults,
)
from resnet_cifar.errors import RunError, UserError

TrainResult = collections.namedtuple('TrainResult', 'step stopped_by')  # stopped_by: a signal's name, or None


def distributed_train_dataset(strategy, images, labels, hps, seed, start_step):
    """Each input pipeline reads its slice of every global batch (see cifar_input.train_dataset)."""

    def dataset_fn(context):
        return cifar_input.train_dataset(
            images,
            labels,
            hps.batch_size,
            seed=seed,
            start_step=start_step,
            num_shards=context.num_input_pipelines,
            shard=context.input_pipeline_id,
            replica_batch_size=context.get_per_replica_batch_size(hps.batch_size),
            cutout=hps.cutout,
            translate=hps.translate,
            reflect_pad=hps.reflect_pad,
            alternating_flip=hps.alternating_flip,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def weights_digest(model):
    """A short hash of the weights, logged at the end: equal on every worker, and across exact resumes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def _writable_folder(config, chief, mode):
    """A context giving the folder to save into: log_root, owned by this process, for the chief.
    The other workers save too (saving can take part in collectives), into a temporary folder."""
    if chief:
        return ownership.Ownership(config.log_root, mode, 'log_root')
    return worker_faults.worker_folder(mode)


def _check_finite(manager, model, step, cost):
    """Stops a diverged run before it writes a checkpoint: a NaN checkpoint would poison every resume."""
    if not (np.isfinite(float(cost)) and all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.weights)):
        last_good = manager.latest_checkpoint or 'none (no checkpoint was written before)'
        raise RunError(
            f'training diverged at step {step}: the loss is {float(cost)}; no checkpoint was written '
            f'from it; the last good one is {last_good}; lower lrn_rate or add warmup_steps'
        )


def _save(manager, model, step, cost):
    _check_finite(manager, model, step, cost)
    try:
        path = manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:  # a full disk, a quota, a vanished folder
        checkpoint_index.remove_unfinished_saves(manager.directory, step)  # the newest complete checkpoint stays
        newest = manager.latest_checkpoint or 'none'
        raise errors.write_failed(checkpoint_index.path_of(manager.directory, step), e, newest) from None
    run_folder.record_config(manager)
    logging.info('saved %s', path)
    return path


def _check_average(path, hps):
    """A weight average (ema_decay's, or the lookahead's) cannot start halfway: it would not be the
    average of the run."""
    averages = (
        ('ema_decay', hps.ema_decay, 'averaged_model', 'a weight average'),
        ('lookahead_every', hps.lookahead_every, 'lookahead', 'a lookahead average'),
    )
    for key, value, part, average in averages:
        if value and not train_state.holds(path, part):
            raise RunError(
                f'cannot resume with {key}={value}: {path} was trained without {average}; '
                f'keep {key}=0 for this run, or start a new one in another log_root',
                key,
                ['log_root'],
            )


def _image_summary(images):
    """Standardized images rescaled to [0, 1] per image, for TensorBoard."""
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return (images - low) / tf.maximum(high - low, 1e-6)


def _duration(seconds):
    """'HH:MM:SS', with the days in front from 24 hours on: '1d 09:00:13'."""
    days, rest = divmod(int(max(0, seconds)), 24 * 3600)
    return (f'{days}d ' if days else '') + time.strftime('%H:%M:%S', time.gmtime(rest))


def _report(writer, step, hps, values, images_per_sec, images=None):
    """The progress line and the training summaries; `images` (a batch) are drawn once. Returns the
    writer to go on with: a no-op one once a write has failed."""
    remaining = (hps.train_steps - step) * hps.batch_size / images_per_sec
    logging.info(
        'step %d/%d: loss %.4f, precision %.4f, learning rate %.5f, %.1f images/sec, %s remaining',
        step,
        hps.train_steps,
        values['cost'],
        values['precision'],
        values['learning_rate'],
        images_per_sec,
        _duration(remaining),
    )
    try:
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar('Precision' if name == 'precision' else name, value)
            tf.summary.scalar('images/sec', images_per_sec)
            if images is not None:
                tf.summary.image('images', _image_summary(images), max_outputs=4)
        writer.flush()
    except (tf.errors.OpError, OSError) as e:  # summaries can be made again; checkpoints cannot: go on
        logging.warning('training summaries stop here: %s', errors.write_failed('the train folder', e).message)
        return tf.summary.create_noop_writer()
    return writer


class _Progress:
    """Reports progress every summary_every_steps: the progress line and the training summaries,
    with the first batch's images once. images/sec counts training time only."""

    def __init__(self, writer, strategy, hps, step):
        self.writer, self.strategy, self.hps = writer, strategy, hps
        self.images_drawn = False
        self.start, self.start_step = time.time(), step

    def report(self, step, metrics, batch_images):
        values = {name: float(value) for name, value in metrics.items()}
        images_per_sec = (step - self.start_step) * self.hps.batch_size / (time.time() - self.start)
        first_batch = None if self.images_drawn else self.strategy.experimental_local_results(batch_images)[0]
        self.writer = _report(self.writer, step, self.hps, values, images_per_sec, first_batch)
        self.images_drawn = True
        self.start, self.start_step = time.time(), step

    @contextlib.contextmanager
    def paused(self):
        """The time spent in the block (saving, evaluating) is not training time."""
        paused = time.time()
        yield
        self.start += time.time() - paused


def _check_batch_divides(batch_size, strategy):
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise RunError(
            f'hparam batch_size: the global batch {batch_size} does not divide among the {replicas} replicas; '
            f'use a multiple of {replicas}'
        )


def _resume(config, checkpoint, saved_config, resume_from):
    """Restores `resume_from` (resume.resume_checkpoint's), if there is one."""
    if resume_from:
        _check_average(resume_from, config.hparams)
        checkpoint.restore(resume_from).expect_partial().assert_existing_objects_matched()
        saved_config.assign(json.dumps(config.to_json()))  # the next checkpoints save this invocation's


def _complete(config, step, resume_from):
    """Whether the run resumed at `step` is complete; says so, or that it resumes. A train_steps
    below the step is refused."""
    train_steps = config.hparams.train_steps
    if step > train_steps:
        raise RunError(f'{train_steps} is below step {step} of {resume_from}', 'train_steps')
    if step == train_steps:
        logging.info('%s is complete at step %d; raise train_steps to train it further', config.log_root, step)
        return True
    logging.info('resumed from %s at step %d', resume_from, step)
    return False


def _summary_writer(config, chief, on_exit):
    """The chief writes training summaries into train_dir; the other workers write none."""
    if not chief:
        return tf.summary.create_noop_writer()
    writer = tf.summary.create_file_writer(atomic_write.make_dir(config.train_folder, 'train_dir'))
    on_exit.callback(writer.close)
    return writer


def _evaluate(eval_reporter, model, step, path):
    """An eval within training: one that fails to report (a full disk, say) warns, and training
    goes on; checkpoints matter more than an eval, which can be made again from them."""
    try:
        eval_reporter(model, step, path)
    except (UserError, tf.errors.OpError, OSError) as e:
        if isinstance(e, worker_faults.PEER_LOST):
            raise  # not the eval's fault: the cluster lost a worker
        line = e.line() if isinstance(e, UserError) else errors.reason(e)
        logging.warning('eval at step %d failed, training goes on: %s', step, line)


def training_batches(config, strategy, images, labels, step):
    """A function of the step (an int64 tensor) giving that global batch as strategy.run hands it
    out: from the tf.data pipeline from `step` on, or made on the device (config.input, see
    device_input.choose). Called inside the compiled steps, once per step, in order."""
    hps = config.hparams
    memory = device_input.device_memory(strategy) if config.input == 'auto' else None
    path = device_input.choose(config.input, images.shape.num_elements() + 4 * labels.shape.num_elements(), memory)
    if path == 'device':
        logging.info("input: the training split on each replica's device, augmented there")
        return device_input.DeviceInput(strategy, images, labels, hps, config.data.seed).batch
    iterator = iter(distributed_train_dataset(strategy, images, labels, hps, config.data.seed, step))
    return lambda step: next(iterator)


def compiled_steps(train_op, next_batch):
    """One tf.function taking `count` training steps in a row (a tf.while_loop, as Keras'
    steps_per_execution): no return to Python between them. Returns the last step's metrics and
    the first step's images (for the image summary)."""

    @tf.function
    def run(count):
        images, labels = next_batch(train_op.state.step.read_value())
        metrics = train_op.train_step(images, labels)
        for _ in tf.range(count - 1):
            metrics = train_op.train_step(*next_batch(train_op.state.step.read_value()))
        return metrics, images

    return run


def _steps_to_take(config, step, evaluating):
    """How many steps the next call takes: up to the next progress line, checkpoint or eval, the
    end, and never more than steps_per_call, so a stop request waits at most that many steps."""
    everies = [config.summary_every_steps, config.checkpoint_every_steps] + [config.eval_every_steps] * evaluating
    due = min(every - step % every for every in everies)
    return min(due, config.steps_per_call, config.hparams.train_steps - step)


def _run_steps(config, train_op, next_batch, step, manager, progress, eval_reporter, stop):
    """Takes steps from `step` to train_steps, or until a stop request, after which the step
    reached is saved; returns it. Saves every checkpoint_every_steps and at the end; with an
    eval_reporter, saves and evaluates every eval_every_steps and at the end. Between these
    nothing waits for the device: the steps run steps_per_call at a time, and the stop request is
    polled between calls."""
    train_steps, model = config.hparams.train_steps, train_op.state.model
    run = compiled_steps(train_op, next_batch)
    metrics = saved_step = None
    while step < train_steps and not stop.poll():
        count = _steps_to_take(config, step, eval_reporter is not None)
        metrics, batch_images = run(tf.constant(count, tf.int64))
        step += count
        last = step == train_steps
        if step % config.summary_every_steps == 0 or last:
            _check_finite(manager, model, step, metrics['cost'])
            progress.report(step, metrics, batch_images)
        evaluate_now = eval_reporter is not None and (step % config.eval_every_steps == 0 or last)
        if step % config.checkpoint_every_steps == 0 or last or evaluate_now:
            with progress.paused():
                path = _save(manager, model, step, metrics['cost'])
                saved_step = step
                if evaluate_now:
                    _evaluate(eval_reporter, train_op.state.eval_model, step, path)
    if stop.signal and metrics is not None and saved_step != step:
        _save(manager, model, step, metrics['cost'])
    return step


def train(config, strategy=None, evaluate=False):
    """Trains to train_steps, checkpointing as it goes; resumes from the newest checkpoint.

    With `evaluate`, it also evaluates every eval_every_steps and at the end. Returns the step
    reached and, when SIGINT or SIGTERM stopped it early (after saving), the signal's name.
    """
    strategy = strategy or tf.distribute.get_strategy()
    hps = config.hparams
    _check_batch_divides(hps.batch_size, strategy)
    chief = devices.is_chief(strategy)
    images, labels = cifar_input.load_run_split(config, 'train')  # first: a mistake in the data leaves no folder
    mode = 'train_and_eval' if evaluate else 'train'
    with _writable_folder(config, chief, mode) as log_root, contextlib.ExitStack() as on_exit:
        on_exit.enter_context(worker_faults.peers_watched(config.log_root))
        stop = on_exit.enter_context(stop_requests.stop_request(strategy))  # a stop during set-up waits for step 1
        if evaluate and chief:  # its eval folder too, from the start: an eval started beside it is refused, not it
            on_exit.enter_context(ownership.Ownership(evaluation.report_dir(config), mode, 'eval_dir'))
        keras.utils.set_random_seed(config.data.seed)  # the initial weights, before any is made
        resume_from = resume.resume_checkpoint(config, repair=chief)  # first: it may rebuild the index
        whitening = fast_network.whitening_kernel(images) if hps.whiten and not resume_from else None  # else restored
        resnet = resnet_model.ResNet(hps, sync_batch_norm=config.sync_batch_norm, whitening=whitening)
        devices.refuse_xla_across_replicas(config.jit_compile, strategy)
        train_op = resnet.build_train_op(strategy, config.jit_compile)
        saved_config = tf.Variable(json.dumps(config.to_json()))
        checkpoint = train_op.state.checkpoint(saved_config)
        _resume(config, checkpoint, saved_config, resume_from)
        manager = tf.train.CheckpointManager(
            checkpoint, log_root, max_to_keep=config.keep_checkpoints, checkpoint_name=checkpoint_index.CHECKPOINT_NAME
        )
        step = int(train_op.state.step.numpy())
        if resume_from and _complete(config, step, resume_from):
            return TrainResult(step, None)

        sys.stdout.write(f'total_params: {resnet_model.count_params(train_op.state.model)}\n')
        sys.stdout.flush()
        if chief and not resume_from:  # a resumed run's is written with its next checkpoint, which then agrees
            run_folder.write_config(config)
        eval_reporter = (
            on_exit.enter_context(evaluation.EvalReporter(config, strategy, in_training=True)) if evaluate else None
        )
        progress = _Progress(_summary_writer(config, chief, on_exit), strategy, hps, step)
        next_batch = training_batches(config, strategy, images, labels, step)
        logging.info(
            'training %s (%s) on %d %s images from step %d to %d',
            resnet_model.network_name(hps),
            config.origin(),
            int(labels.shape[0]),
            config.dataset,
            step,
            hps.train_steps,
        )
        step = _run_steps(config, train_op, next_batch, step, manager, progress, eval_reporter, stop)
        if stop.signal:
            logging.info('stopped by %s at step %d; run the same command to resume', stop.signal, step)
            return TrainResult(step, stop.signal)
        logging.info('training done at step %d; weights digest %s', step, weights_digest(train_op.state.model))
        return TrainResult(step, None)
