"""Training: takes a run from a fresh start, or from its newest checkpoint, to train_steps.

    result = training.train(config)    # config: a run_config.RunConfig

The loop in `train` reads top to bottom: set up or resume, then take a step; every N steps log;
every N save a checkpoint; every N evaluate; stop when asked (SIGINT, SIGTERM) or done.
"""

import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import devices, evaluation, recipe, run_config, run_folder
from resnet_cifar.run_folder import RunError

TrainResult = collections.namedtuple('TrainResult', 'step stopped_by')  # stopped_by: a signal's name, or None


class StopRequest:
    """Within `with`, SIGTERM and SIGINT become a request the loop honours after its current step."""

    def __enter__(self):
        self.signal = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
        return run_folder.Ownership(config.log_root, mode, 'log_root')
    return tempfile.TemporaryDirectory(prefix='resnet-worker-')


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
        begun = os.listdir(manager.directory) if os.path.isdir(manager.directory) else []  # a vanished folder
        for name in begun:  # what this save began; the newest complete checkpoint stays
            path = os.path.join(manager.directory, name)
            if not name.startswith((f'ckpt-{step}.', f'ckpt-{step}_temp')):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        newest = manager.latest_checkpoint or 'none'
        raise run_folder.write_failed(os.path.join(manager.directory, f'ckpt-{step}'), e, newest) from None
    logging.info('saved %s', path)
    return path


def _check_average(path, hps):
    """A weight average cannot start halfway: it would not be the average of the run."""
    if hps.ema_decay and not recipe.has_average(path):
        raise RunError(
            f'cannot resume with ema_decay={hps.ema_decay}: {path} was trained without a weight average; '
            'keep ema_decay=0 for this run, or start a new one in another log_root',
            'ema_decay',
            ['log_root'],
        )


def _image_summary(images):
    """Standardized images rescaled to [0, 1] per image, for TensorBoard."""
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return (images - low) / tf.maximum(high - low, 1e-6)


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
        time.strftime('%H:%M:%S', time.gmtime(max(0, remaining))),
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
        logging.warning('training summaries stop here: %s', run_folder.write_failed('the train folder', e).message)
        return tf.summary.create_noop_writer()
    return writer


def train(config, strategy=None, evaluate=False):
    """Trains to train_steps, checkpointing as it goes; resumes from the newest checkpoint.

    With `evaluate`, it also evaluates every eval_every_steps and at the end. Returns the step
    reached and, when SIGINT or SIGTERM stopped it early (after saving), the signal's name.
    """
    strategy = strategy or tf.distribute.get_strategy()
    hps = config.hparams
    replicas = strategy.num_replicas_in_sync
    if hps.batch_size % replicas:
        raise RunError(
            f'hparam batch_size: the global batch {hps.batch_size} does not divide among the {replicas} replicas; '
            f'use a multiple of {replicas}'
        )
    chief = devices.is_chief(strategy)
    images, labels = run_config.load_split(config, 'train')  # first: a mistake in the data leaves no folder
    mode = 'train_and_eval' if evaluate else 'train'
    with _writable_folder(config, chief, mode) as log_root, contextlib.ExitStack() as on_exit:
        # The model, its optimizer and step, and the checkpoints that hold them with the run's configuration.
        keras.utils.set_random_seed(config.data.seed)
        resnet = resnet_model.ResNet(hps, sync_batch_norm=config.sync_batch_norm)
        with strategy.scope():
            model = resnet.build_model()
        train_step = resnet.build_train_op(strategy, devices.check_xla(config.jit_compile, strategy))
        saved_config = tf.Variable(json.dumps(config.to_json()))
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=resnet.optimizer, step=resnet.global_step, run_config=saved_config
        )
        if resnet.averaged_model is not None:
            setattr(checkpoint, recipe.AVERAGED_MODEL, resnet.averaged_model)
        manager = tf.train.CheckpointManager(
            checkpoint, log_root, max_to_keep=config.keep_checkpoints, checkpoint_name='ckpt'
        )
        sys.stdout.write(f'total_params: {resnet_model.count_params(model)}\n')
        sys.stdout.flush()

        # A fresh start, or a resume from the newest checkpoint.
        resume_from = run_folder.resume_checkpoint(config)
        if resume_from:
            _check_average(resume_from, hps)
            checkpoint.restore(resume_from).expect_partial().assert_existing_objects_matched()
            saved_config.assign(json.dumps(config.to_json()))
            logging.info('resumed from %s', resume_from)
        step = int(resnet.global_step.numpy())
        if step > hps.train_steps:
            raise RunError(f'{hps.train_steps} is below step {step} of {resume_from}', 'train_steps')
        if resume_from and step == hps.train_steps:
            logging.info('%s is already complete at step %d; raise train_steps to train it further', log_root, step)
            return TrainResult(step, None)
        if chief:
            run_folder.write_config(config)
        evaluator = on_exit.enter_context(evaluation.Evaluator(config, resnet, strategy)) if evaluate else None
        if chief:
            writer = tf.summary.create_file_writer(run_folder.make_dir(config.train_dir, 'train_dir'))
            on_exit.callback(writer.close)
        else:
            writer = tf.summary.create_noop_writer()
        batches = iter(distributed_train_dataset(strategy, images, labels, hps, config.data.seed, step))
        logging.info(
            'training %s (preset %s) on %d %s images from step %d to %d',
            resnet_model.network_name(hps),
            config.preset,
            int(labels.shape[0]),
            config.dataset,
            step,
            hps.train_steps,
        )

        saved_step = step if resume_from else None
        metrics, images_drawn = None, False
        interval_start, interval_step = time.time(), step  # images/sec counts training time only
        with StopRequest() as stop:
            while step < hps.train_steps and not stop.signal:
                batch_images, batch_labels = next(batches)
                metrics = train_step(batch_images, batch_labels)
                step += 1
                last = step == hps.train_steps

                if step % config.summary_every_steps == 0 or last:
                    values = {name: float(value) for name, value in metrics.items()}
                    _check_finite(manager, model, step, values['cost'])
                    images_per_sec = (step - interval_step) * hps.batch_size / (time.time() - interval_start)
                    first_batch = None if images_drawn else strategy.experimental_local_results(batch_images)[0]
                    writer = _report(writer, step, hps, values, images_per_sec, first_batch)
                    images_drawn = True
                    interval_start, interval_step = time.time(), step

                evaluate_now = evaluator is not None and (step % config.eval_every_steps == 0 or last)
                if step % config.checkpoint_every_steps == 0 or last or evaluate_now:
                    paused = time.time()
                    path = _save(manager, model, step, metrics['cost'])
                    saved_step = step
                    if evaluate_now:
                        evaluator(step, path)
                    interval_start += time.time() - paused

            if stop.signal:
                if metrics is not None and saved_step != step:
                    _save(manager, model, step, metrics['cost'])
                logging.info('stopped by %s at step %d; run the same command to resume', stop.signal, step)
                return TrainResult(step, stop.signal)
        logging.info('training done at step %d; weights digest %s', step, weights_digest(model))
        return TrainResult(step, None)
