"""Evaluation: scoring a model on a whole split, the report of each score (summaries,
metrics.json, history.csv), and the eval mode, which scores a run's checkpoints. Training reports
its evals through the same EvalReporter."""

import csv
import io
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import (
    checkpoint_index,
    devices,
    errors,
    json_files,
    ownership,
    restore,
    train_state,
)
from resnet_cifar.confusion_image import confusion_image

METRICS = 'metrics.json'
HISTORY = 'history.csv'  # a row per eval, for selecting and plotting without TensorBoard
HISTORY_FIELDS = ('step', 'split', 'precision', 'loss', 'checkpoint', 'time')
TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'  # history.csv's time: UTC
PROGRESS_EVERY_SECS = 10  # an eval shorter than this prints no progress line


class SplitScorer:
    """Scores a model on a whole split, every example once: precision (the share of right
    predictions), mean loss, and the confusion matrix.

    It keeps one iterator over the repeated batches: starting a tf.data iterator for every pass
    costs more than evaluating a small split.
    """

    def __init__(self, hps, images, labels, batch_size, strategy, jit_compile=False, label=''):
        self.label = label  # starts its progress lines: what is scored, where several things are
        self.resnet = resnet_model.ResNet(hps)
        self.strategy = strategy
        devices.refuse_xla_across_replicas(jit_compile, strategy)
        self.jit_compile = jit_compile
        self.size = int(labels.shape[0])
        self.num_batches = -(-self.size // batch_size)
        dataset = cifar_input.eval_dataset(images, labels, batch_size).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        self.batches = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
        self.model, self.eval_steps = None, {}  # the model scored last, and its compiled step per tta

    @classmethod
    def of_split(cls, config, split, strategy, label=''):
        """The scorer of the configuration's split ('test' or 'validation'), at its eval settings."""
        images, labels = cifar_input.load_run_split(config, split)
        return cls(config.hparams, images, labels, config.eval_batch_size, strategy, config.jit_compile, label)

    def __call__(self, model, tta=True):
        """{precision, loss, num_examples} of `model` on the split, and its confusion matrix;
        tta=False: one view per image, whatever the hparams' test-time augmentation."""
        if model is not self.model:
            self.model, self.eval_steps = model, {}
        if tta not in self.eval_steps:  # one compiled step per model and views
            eval_step = self.resnet.build_eval_op(model, self.strategy, self.jit_compile, tta)
            # Traced once for any batch size: a split's last batch may be partial, and a step traced
            # for its shapes alone would be traced again for that batch.
            eval_step.get_concrete_function(*self.batches.element_spec)
            self.eval_steps[tta] = eval_step
        eval_step = self.eval_steps[tta]
        confusion, loss_sum = 0, 0.0
        last_progress = time.time()
        for _ in range(self.num_batches):
            result = eval_step(*next(self.batches))
            confusion += result['confusion'].numpy()
            loss_sum += float(result['loss_sum'])
            if time.time() - last_progress >= PROGRESS_EVERY_SECS:
                logging.info('%sevaluated %d of %d images', self.label, confusion.sum(), self.size)
                last_progress = time.time()
        count = int(confusion.sum())
        return {'precision': np.trace(confusion) / count, 'loss': loss_sum / count, 'num_examples': count}, confusion


def append_history(folder, metrics):
    """Appends the eval's row to FOLDER/history.csv (a header first, if the file is new); `time` is UTC."""
    path = os.path.join(folder, HISTORY)
    row = {name: metrics.get(name) for name in HISTORY_FIELDS}
    row.update(precision=f'{metrics["precision"]:.6f}', loss=f'{metrics["loss"]:.6f}')
    row['time'] = time.strftime(TIME_FORMAT, time.gmtime())
    is_new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not is_new:
        read_history(folder)  # a damaged file is refused, not written to
    try:
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS)
            if is_new:
                writer.writeheader()
            writer.writerow(row)  # one write of a short line: a crash leaves whole rows
    except OSError as e:
        raise errors.write_failed(path, e, metrics['checkpoint']) from None


def read_history(folder):
    """The rows of FOLDER/history.csv, with step as an int and precision and loss as floats, each
    checked: a damaged file is refused in one line naming it and the line."""
    path = os.path.join(folder, HISTORY)
    way_out = 'fix that line, or move the file away (the next eval starts a new one)'
    try:
        with open(path, newline='') as f:
            text = f.read()
        reader = csv.DictReader(io.StringIO(text, newline=''))
        header, rows = reader.fieldnames, list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise errors.RunError(f'{path}: cannot be read ({errors.reason(e)}); {way_out}') from None
    if not text:  # made, and the process gone before its first row: no evals
        return []
    if list(header or ()) != list(HISTORY_FIELDS):
        raise errors.RunError(f'{path}: line 1: expected the header {",".join(HISTORY_FIELDS)}; {way_out}')
    if not text.endswith('\n'):  # every row is written whole, with its line end
        raise errors.RunError(f'{path}: line {text.count(chr(10)) + 1}: cut short (no line end); {way_out}')
    return [_history_row(path, number, row, way_out) for number, row in enumerate(rows, start=2)]


def _history_row(path, number, row, way_out):
    """A row of history.csv with its numbers read, or a RunError naming its line."""
    try:
        values = {'step': int(row['step']), 'precision': float(row['precision']), 'loss': float(row['loss'])}
        sound = values['step'] >= 0 and 0 <= values['precision'] <= 1 and values['loss'] >= 0
        time.strptime(row['time'], TIME_FORMAT)
    except (TypeError, ValueError):  # a missing column reads as None
        sound = False
    if not sound or None in row.values() or None in row:  # None: csv.DictReader's mark of a short or long row
        fields = ', '.join(f'{name} {row.get(name)!r}' for name in HISTORY_FIELDS)
        raise errors.RunError(f'{path}: line {number}: {fields} is no eval result; {way_out}')
    return {**row, **values}


def read_best_precision(folder):
    """The best precision so far that FOLDER/metrics.json holds, checked; 0 without the file."""
    path = os.path.join(folder, METRICS)
    way_out = 'fix it, or move it away (the best precision then counts from the next eval)'
    try:
        metrics = json_files.read_json(path, way_out)
    except FileNotFoundError:
        return 0.0
    best = metrics.get('best_precision')
    if isinstance(best, bool) or not isinstance(best, int | float) or not 0 <= best <= 1:
        raise errors.RunError(f'{path}: best_precision: expected a number from 0 to 1, got {best!r}; {way_out}')
    return float(best)


def report_dir(config):
    """Where the eval split's summaries and metrics.json go: EVAL_DIR for the test split,
    EVAL_DIR/validation for the validation split, so the two never overwrite each other."""
    return config.eval_folder if config.eval_split == 'test' else os.path.join(config.eval_folder, config.eval_split)


class EvalReporter:
    """Scores a model on the configured split and reports it: summaries, metrics.json with the best
    precision of that split, and a row of history.csv. Only the chief reports, and nothing is
    written before the first report; from then on, to the end of `with`, it owns the folder.
    in_training: the evals of a training run, which with intermediate_tta=false use one view per
    image before train_steps (test-time augmentation at the final eval only)."""

    def __init__(self, config, strategy, in_training=False):
        hps = config.hparams
        self.has_tta = hps.flip_tta or hps.translate_tta
        self.one_view_before = hps.train_steps if in_training and not hps.intermediate_tta else 0
        self.split = config.eval_split
        self.scorer = SplitScorer.of_split(config, self.split, strategy)
        self.class_names = config.class_names
        self.eval_dir = report_dir(config) if devices.is_chief(strategy) else None
        self.writer = self.owner = None
        self.best_precision = read_best_precision(report_dir(config))
        if os.path.exists(os.path.join(report_dir(config), HISTORY)):
            read_history(report_dir(config))  # checked now: a damaged one is refused before any work

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer:
            self.writer.close()
        if self.owner:
            self.owner.__exit__(*exc)

    def _write(self, metrics, confusion):
        step = metrics['step']
        if self.writer is None:  # the first report: this process becomes the one writer of the folder
            self.owner = ownership.Ownership(self.eval_dir, 'eval', 'eval_dir')
            self.writer = tf.summary.create_file_writer(self.owner.__enter__())
        with self.writer.as_default(step=step):
            tf.summary.scalar('Precision', metrics['precision'])
            tf.summary.scalar('Best Precision', metrics['best_precision'])
            tf.summary.scalar('loss', metrics['loss'])
            tf.summary.image('confusion_matrix', confusion_image(confusion, self.class_names, step))
        self.writer.flush()
        json_files.write_json(os.path.join(self.eval_dir, METRICS), metrics, newest=metrics['checkpoint'])
        append_history(self.eval_dir, metrics)

    def __call__(self, model, step, checkpoint):
        """Scores `model`, saved at `step` as `checkpoint`, reports it and returns its metrics."""
        tta = step >= self.one_view_before
        scores, confusion = self.scorer(model, tta)
        metrics = {'step': step, 'split': self.split, **scores, 'checkpoint': checkpoint}
        if self.has_tta:
            metrics['tta'] = tta
        self.best_precision = metrics['best_precision'] = max(self.best_precision, metrics['precision'])
        # Per class: the share of that class's images classified right.
        recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
        metrics['per_class_recall'] = {
            name: round(float(r), 4) for name, r in zip(self.class_names, recall, strict=True)
        }
        metrics['confusion_matrix'] = confusion.tolist()  # rows: true classes, columns: predictions
        if self.eval_dir:
            self._write(metrics, confusion)
        views = {True: ', with test-time augmentation', False: ', one view: no test-time augmentation'}
        logging.info(
            'eval at step %d: loss %.4f, precision %.4f, best precision %.4f (%d %s images%s)',
            step,
            metrics['loss'],
            metrics['precision'],
            self.best_precision,
            metrics['num_examples'],
            self.split,
            views[tta] if self.has_tta else '',
        )
        return metrics


def _checkpoints_to_evaluate(config):
    """With eval_once, the existing checkpoints newest first; else each new one as it appears."""
    if config.eval_once:
        if not checkpoint_index.checkpoints(config.log_root):
            raise errors.RunError(f'no checkpoint in {config.log_root}; train first', 'log_root')
        return checkpoint_index.newest_first(config.log_root)
    logging.info(
        'waiting for checkpoints in %s (up to %d s without a new one)', config.log_root, config.eval_timeout_secs
    )
    return checkpoint_index.watch(config.log_root, config.eval_timeout_secs)


def evaluate_checkpoints(config, strategy=None):
    """The eval mode: scores and reports the run's checkpoints, and returns the metrics of the last
    one scored.

    With config.eval_once it scores the newest readable checkpoint. Otherwise it waits for each
    new one, and stops after the one at train_steps, or after eval_timeout_secs without one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    paths = _checkpoints_to_evaluate(config)
    metrics = None
    with EvalReporter(config, strategy) as reporter:
        for path in checkpoint_index.usable(paths, 'evaluate', config):
            try:
                model = restore.restore_model(path, config.hparams, strategy)
                step, train_steps = _saved_step(path)
            except tf.errors.NotFoundError:  # the trainer keeps keep_checkpoints: an old one may go first
                logging.warning('skipping %s: deleted by the trainer before it could be read', path)
                continue
            metrics = reporter(model, step, path)
            if config.eval_once or step >= train_steps:
                return metrics
    if metrics is None and config.eval_once:
        raise errors.RunError(f'no readable checkpoint in {config.log_root}', 'log_root')
    if metrics is None:
        raise errors.RunError(
            f'no usable checkpoint appeared in {config.log_root} within {config.eval_timeout_secs} s '
            '(eval_timeout_secs)',
            'log_root',
            ['eval_timeout_secs'],
        )
    logging.info('no new checkpoint for %d s; stopping', config.eval_timeout_secs)
    return metrics


def _saved_step(path):
    """The step of the checkpoint at `path`, and the train_steps its run was saved with: the run's
    end, however late it was raised."""
    step = int(tf.train.load_checkpoint(path).get_tensor(train_state.STEP_KEY))
    return step, checkpoint_index.checkpoint_config(path).hparams.train_steps


def score_checkpoint(config, checkpoint, split='test', strategy=None, label=''):
    """Precision, loss and number of examples of one checkpoint on a whole split, reported
    nowhere: for comparing checkpoints and settings (flip_tta) after training, as
    scripts/sweep.py does; `label` starts its progress lines."""
    problem = checkpoint_index.checkpoint_problem(checkpoint, config)
    if problem:
        raise errors.RunError(problem, 'checkpoint')
    strategy = strategy or tf.distribute.get_strategy()
    model = restore.restore_model(checkpoint, config.hparams, strategy)
    return SplitScorer.of_split(config, split, strategy, label)(model)[0]
