"""Evaluation: a pass over a whole split, its report (summaries, metrics.json), and the watcher
that evaluates a run's checkpoints as they appear. Training uses the same report."""

import csv
import io
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import devices, recipe, run_config, run_folder

METRICS = 'metrics.json'
HISTORY = 'history.csv'  # a row per eval, for selecting and plotting without TensorBoard
HISTORY_FIELDS = ('step', 'split', 'precision', 'loss', 'checkpoint', 'time')
TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'  # history.csv's time: UTC


class EvalPass:
    """Measures a model on a whole split, every example once.

    It keeps one iterator over the repeated batches: starting a tf.data iterator for every pass
    costs more than evaluating a thousand images.
    """

    def __init__(self, resnet, images, labels, batch_size, strategy, jit_compile=False):
        self.eval_step = resnet.build_eval_op(strategy, devices.check_xla(jit_compile, strategy))
        self.size = int(labels.shape[0])
        self.num_batches = -(-self.size // batch_size)
        dataset = cifar_input.eval_dataset(images, labels, batch_size).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        self.batches = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))

    def __call__(self):
        confusion, loss_sum = 0, 0.0
        for _ in range(self.num_batches):
            result = self.eval_step(*next(self.batches))
            confusion += result['confusion'].numpy()
            loss_sum += float(result['loss_sum'])
            logging.log_every_n_seconds(logging.INFO, 'evaluated %d of %d images', 10, confusion.sum(), self.size)
        count = int(confusion.sum())
        return {'precision': np.trace(confusion) / count, 'loss': loss_sum / count, 'num_examples': count}, confusion


def _confusion_image(confusion, class_names, step):
    """The confusion matrix drawn with matplotlib, as a [1, H, W, 4] image for tf.summary.image.

    A cell's colour is its share of the true class (the row), so classes of different sizes
    compare, and the colour bar says which share a colour is; up to 20 classes each cell also
    carries its count of images (CIFAR-100's 100 classes get colour alone)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num_classes = len(class_names)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.35 * num_classes, 24)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=80)  # the extra width is the colour bar's
    image = ax.imshow(shares, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).set_label('share of the true class (row)')
    ticks = range(num_classes)
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    title = f'step {step}: share of each true class'
    if num_classes <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            color = 'white' if shares[row, col] > 0.5 else ('black' if count else 'lightgray')
            ax.text(col, row, str(count), ha='center', va='center', fontsize=8 if num_classes <= 10 else 7, color=color)
        title += ', images counted in each cell'
    ax.set_title(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format='png')
    plt.close(fig)
    return tf.image.decode_png(png.getvalue())[tf.newaxis]


def append_history(folder, metrics):
    """Appends the eval's row to FOLDER/history.csv (a header first, if the file is new); `time` is UTC."""
    path = os.path.join(folder, HISTORY)
    row = {name: metrics.get(name) for name in HISTORY_FIELDS}
    row.update(precision=f'{metrics["precision"]:.6f}', loss=f'{metrics["loss"]:.6f}')
    row['time'] = time.strftime(TIME_FORMAT, time.gmtime())
    try:
        is_new = not os.path.exists(path)
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS)
            if is_new:
                writer.writeheader()
            writer.writerow(row)  # one write of a short line: a crash leaves whole rows
    except OSError as e:
        raise run_folder.write_failed(path, e, metrics['checkpoint']) from None


def read_history(folder):
    """The rows of FOLDER/history.csv, with step as an int and precision and loss as floats."""
    with open(os.path.join(folder, HISTORY), newline='') as f:
        rows = list(csv.DictReader(f))
    return [
        {**row, 'step': int(row['step']), 'precision': float(row['precision']), 'loss': float(row['loss'])}
        for row in rows
    ]


def report_dir(config):
    """Where the eval split's summaries and metrics.json go: EVAL_DIR for the test split,
    EVAL_DIR/validation for the validation split, so the two never overwrite each other."""
    return config.eval_dir if config.eval_split == 'test' else os.path.join(config.eval_dir, config.eval_split)


class Evaluator:
    """Evaluates a model on the configured split and reports to its folder: summaries and
    metrics.json, with the best precision of that split. Only the chief reports, and nothing is
    written before the first report; from then on, to the end of `with`, it owns the folder."""

    def __init__(self, config, resnet, strategy):
        self.split = config.eval_split
        images, labels = run_config.load_split(config, self.split)
        self.eval_pass = EvalPass(resnet, images, labels, config.eval_batch_size, strategy, config.jit_compile)
        self.class_names = config.class_names
        self.eval_dir = report_dir(config) if devices.is_chief(strategy) else None
        self.writer = self.owner = None
        self.best_precision = 0.0
        previous = os.path.join(report_dir(config), METRICS)
        if os.path.exists(previous):
            self.best_precision = run_folder.read_json(previous).get('best_precision', 0.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer:
            self.writer.close()
        if self.owner:
            self.owner.__exit__(*exc)

    def _report(self, metrics, confusion):
        step = metrics['step']
        if self.writer is None:  # the first report: this process becomes the one writer of the folder
            self.owner = run_folder.Ownership(self.eval_dir, 'eval', 'eval_dir')
            self.writer = tf.summary.create_file_writer(self.owner.__enter__())
        with self.writer.as_default(step=step):
            tf.summary.scalar('Precision', metrics['precision'])
            tf.summary.scalar('Best Precision', metrics['best_precision'])
            tf.summary.scalar('loss', metrics['loss'])
            tf.summary.image('confusion_matrix', _confusion_image(confusion, self.class_names, step))
        self.writer.flush()
        run_folder.write_json(os.path.join(self.eval_dir, METRICS), metrics, newest=metrics['checkpoint'])
        append_history(self.eval_dir, metrics)

    def __call__(self, step, checkpoint):
        measured, confusion = self.eval_pass()
        metrics = {'step': step, 'split': self.split, **measured, 'checkpoint': checkpoint}
        self.best_precision = metrics['best_precision'] = max(self.best_precision, metrics['precision'])
        # Per class: the share of that class's images classified right.
        per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
        metrics['per_class_precision'] = {
            name: round(float(p), 4) for name, p in zip(self.class_names, per_class, strict=True)
        }
        metrics['confusion_matrix'] = confusion.tolist()  # rows: true classes, columns: predictions
        if self.eval_dir:
            self._report(metrics, confusion)
        logging.info(
            'eval at step %d: loss %.4f, precision %.4f, best precision %.4f (%d %s images)',
            step,
            metrics['loss'],
            metrics['precision'],
            self.best_precision,
            metrics['num_examples'],
            self.split,
        )
        return metrics


def _checkpoints_to_evaluate(config):
    """With eval_once, the existing checkpoints newest first; else each new one as it appears."""
    if config.eval_once:
        paths = run_folder.checkpoints(config.log_root)
        if not paths:
            raise run_folder.RunError(f'no checkpoint in {config.log_root}; train first', 'log_root')
        return paths
    logging.info(
        'waiting for checkpoints in %s (up to %d s without a new one)', config.log_root, config.eval_timeout_secs
    )
    return tf.train.checkpoints_iterator(config.log_root, min_interval_secs=1, timeout=config.eval_timeout_secs)


def evaluate(config, strategy=None):
    """Evaluates the run's checkpoints, and returns the metrics of the last one evaluated.

    With config.eval_once it evaluates the newest readable checkpoint. Otherwise it waits for
    each new one, and stops after the one at train_steps, or after eval_timeout_secs without one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resnet = resnet_model.ResNet(config.hparams, sync_batch_norm=config.sync_batch_norm)
    with strategy.scope():
        model = resnet.build_model()
        step = tf.Variable(0, dtype=tf.int64)
    saved_config = tf.Variable('')  # restored with the weights: the run's train_steps, however late it was raised
    paths = _checkpoints_to_evaluate(config)
    metrics = None
    with Evaluator(config, resnet, strategy) as evaluator:
        for path in run_folder.usable(paths, 'evaluate', config):
            try:
                recipe.restore_for_inference(path, model, step=step, run_config=saved_config)
            except tf.errors.NotFoundError:  # the trainer keeps keep_checkpoints: an old one may go first
                logging.warning('skipping %s: deleted by the trainer before it could be read', path)
                continue
            metrics = evaluator(int(step.numpy()), path)
            train_steps = json.loads(saved_config.numpy())['hparams']['train_steps']
            if config.eval_once or metrics['step'] >= train_steps:
                return metrics
    if metrics is None and config.eval_once:
        raise run_folder.RunError(f'no readable checkpoint in {config.log_root}', 'log_root')
    if metrics is None:
        raise run_folder.RunError(
            f'no usable checkpoint appeared in {config.log_root} within {config.eval_timeout_secs} s '
            '(eval_timeout_secs)',
            'log_root',
            ['eval_timeout_secs'],
        )
    logging.info('no new checkpoint for %d s; stopping', config.eval_timeout_secs)
    return metrics


def measure(config, checkpoint, split='test', strategy=None):
    """Precision and loss of one checkpoint on a whole split, reported nowhere: for comparing
    checkpoints and settings (flip_tta) after training, as scripts/sweep.py does."""
    problem = run_folder.checkpoint_problem(checkpoint, config)
    if problem:
        raise run_folder.RunError(problem, 'checkpoint')
    strategy = strategy or tf.distribute.get_strategy()
    resnet = resnet_model.ResNet(config.hparams)
    with strategy.scope():
        model = resnet.build_model()
    recipe.restore_for_inference(checkpoint, model)
    images, labels = run_config.load_split(config, split)
    measured, _ = EvalPass(resnet, images, labels, config.eval_batch_size, strategy, config.jit_compile)()
    return measured
