"""ResNet on CIFAR-10/100: train, evaluate, or both.

    python resnet_main.py --mode=train --data_dir=DIR --log_root=runs/r32
    python resnet_main.py --mode=eval --data_dir=DIR --log_root=runs/r32 --eval_once

A run lives in --log_root: hparams.json (what the run is), checkpoints ckpt-STEP, train/ and
eval/ summaries and eval/metrics.json. A later train resumes it; eval reads what it needs
from hparams.json, so the training flags are never repeated.
"""

import atexit
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # keep TensorFlow's C++ start-up chatter out of the way
# TensorFlow's oneDNN kernels: on Linux it uses them by default only on x86 CPUs with VNNI, bfloat16
# or AMX instructions; on the AVX2 CPU measured they train ResNet-32 1.7 to 2 times as fast as its
# Eigen kernels (README, Performance). Read once, at import; TF_ENABLE_ONEDNN_OPTS=0 still turns them
# off. Only on x86-64, where it was measured.
if platform.machine().lower() in ('x86_64', 'amd64'):
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import cifar_input  # noqa: E402
import resnet_model  # noqa: E402

# The original's flags, same names and meaning.
flags.DEFINE_enum('dataset', 'cifar10', list(cifar_input.DATASETS), 'cifar10 or cifar100.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'train_and_eval', 'predict', 'export'], 'What to run.')
flags.DEFINE_string('train_data_path', None, 'File pattern of the training batch files.')
flags.DEFINE_string('eval_data_path', None, 'File pattern of the test batch files.')
flags.DEFINE_string('log_root', None, 'Directory of the run: checkpoints, hparams.json, summaries.')
flags.DEFINE_string('train_dir', None, 'Training summaries (default LOG_ROOT/train).')
flags.DEFINE_string('eval_dir', None, 'Eval summaries and metrics.json (default LOG_ROOT/eval).')
flags.DEFINE_bool('eval_once', False, 'Evaluate the newest checkpoint once, then exit.')
flags.DEFINE_integer('num_gpus', 0, 'GPUs to use: 0 (CPU), 1, or several (MirroredStrategy).', lower_bound=0)
# Added.
flags.DEFINE_string(
    'data_dir',
    None,
    'Folder with the binary batch files, or the folder holding cifar-10-batches-bin'
    ' / cifar-100-binary; the train and eval patterns follow from it.',
)
flags.DEFINE_enum('data_source', 'binary', ['binary', 'tfds', 'synthetic'], 'Where images come from.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data directory (with --data_source=tfds).')
flags.DEFINE_integer('validation_size', 0, 'Hold out the last N training images as a validation split.', lower_bound=0)
flags.DEFINE_enum('eval_split', 'test', ['test', 'validation'], 'What eval measures.')
flags.DEFINE_string('hparams', 'resnet32', f'A preset ({", ".join(resnet_model.preset_names())}) or a JSON file.')
flags.DEFINE_string(
    'hparams_override', '', 'Comma-separated key=value, lists in brackets: train_steps=960,lr_boundaries=[480,720].'
)
flags.DEFINE_integer('train_steps', None, 'Stop training at this step (overrides the preset).', lower_bound=1)
flags.DEFINE_integer('checkpoint_every_steps', 1000, 'Save a checkpoint every N steps (and at the end).', lower_bound=1)
flags.DEFINE_integer('keep_checkpoints', 5, 'How many of the newest checkpoints to keep.', lower_bound=1)
flags.DEFINE_integer('summary_every_steps', 100, 'Log and write training summaries every N steps.', lower_bound=1)
flags.DEFINE_integer('eval_every_steps', 1000, 'With --mode=train_and_eval: evaluate every N steps.', lower_bound=1)
flags.DEFINE_integer(
    'eval_batch_size', 100, 'Eval batch size (any size; the last batch may be partial).', lower_bound=1
)
flags.DEFINE_integer('eval_timeout_secs', 600, 'Eval gives up after this long without a new checkpoint.', lower_bound=0)
flags.DEFINE_integer('seed', 0, 'Seed of weight initialization, data order and augmentation.')
flags.DEFINE_bool(
    'deterministic',
    False,
    "TensorFlow's op determinism: bit-exact resumes on GPUs too (the CPU kernels here already are), at some speed.",
)

# Using a trained model.
flags.DEFINE_list('images', [], 'With --mode=predict: image files (PNG, JPEG, ...) and/or binary batch files (.bin).')
flags.DEFINE_integer('top_k', 3, 'With --mode=predict: how many classes to print per image.', lower_bound=1)
flags.DEFINE_string('checkpoint', None, 'With --mode=predict or export: this checkpoint instead of the newest.')
flags.DEFINE_string('export_dir', None, 'With --mode=export: a new folder for the SavedModel.')
# Scaling out, through tf.distribute and Keras mixed precision.
STRATEGIES = ['default', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu']
flags.DEFINE_enum(
    'distribution_strategy',
    None,
    STRATEGIES,
    'tf.distribute strategy. Default: from --num_gpus (0: default, 1: one_device, more: mirrored).',
)
flags.DEFINE_string('tpu', None, 'TPU name or grpc:// address, with --distribution_strategy=tpu.')
flags.DEFINE_bool('sync_batch_norm', False, 'Batch-norm statistics over the global batch, across replicas.')
DTYPE_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}
flags.DEFINE_enum('dtype', 'float32', list(DTYPE_POLICIES), 'Compute dtype; variables, logits and loss stay float32.')
flags.DEFINE_bool(
    'jit_compile',
    False,
    'XLA-compile the train and eval steps, with one replica (XLA cannot compile the cross-replica updates '
    "of this step). Off by default: on the CPUs measured, TensorFlow's oneDNN kernels are faster (README).",
)


FLAGS = flags.FLAGS
RUN_CONFIG = 'hparams.json'
METRICS = 'metrics.json'

# What a run saves beside hparams and dataset, so that later modes need not repeat it.
DATA_FLAGS = ('data_source', 'train_data_path', 'eval_data_path', 'tfds_data_dir', 'validation_size', 'seed')


class RunError(Exception):
    """The run cannot go on as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------
# The run's configuration: flags over what LOG_ROOT/hparams.json saved.


def _write_json(path, values):
    """Writes atomically, so a reader never sees half a file."""
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(values, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def _read_run_config(log_root):
    path = os.path.join(log_root, RUN_CONFIG)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
        resnet_model.make_hparams(saved['hparams'], source=path)
        return saved
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f'{path}: unreadable run configuration ({e}); move it away or use another --log_root') from None


def _describe(config):
    arch = resnet_model.architecture(resnet_model.make_hparams(config['hparams']))
    settings = ', '.join(f'{k}={json.dumps(v)}' for k, v in arch.items())
    return f'preset {config["preset"]} on {config["dataset"]} ({settings})'


def resolve_run_config():
    """The run to do: saved settings, then whatever the user passed explicitly on top."""
    saved = _read_run_config(FLAGS.log_root)
    explicit = {name for name in FLAGS if FLAGS[name].present}

    def setting(name):
        return getattr(FLAGS, name) if name in explicit or saved is None else saved['data'].get(name)

    dataset = FLAGS.dataset if 'dataset' in explicit or saved is None else saved['dataset']
    if 'hparams' in explicit or saved is None:
        preset, hps = FLAGS.hparams, resnet_model.load_preset(FLAGS.hparams)
    else:
        preset, hps = saved['preset'], resnet_model.make_hparams(saved['hparams'])
    overrides = resnet_model.parse_overrides(FLAGS.hparams_override)
    num_classes = cifar_input.DATASETS[dataset].num_classes
    if overrides.setdefault('num_classes', num_classes) != num_classes:
        raise resnet_model.HParamsError(f'hparam num_classes: follows --dataset ({dataset}: {num_classes})')
    if FLAGS.train_steps is not None:
        overrides['train_steps'] = FLAGS.train_steps
    hps = resnet_model.make_hparams({**hps._asdict(), **overrides}, source='--hparams_override')

    data = {name: setting(name) for name in DATA_FLAGS}
    if FLAGS.data_dir and (saved is None or 'data_dir' in explicit):
        train_pattern, eval_pattern = cifar_input.data_patterns(dataset, FLAGS.data_dir)
        data['train_data_path'] = FLAGS.train_data_path or train_pattern
        data['eval_data_path'] = FLAGS.eval_data_path or eval_pattern
    config = {'dataset': dataset, 'preset': preset, 'hparams': hps._asdict(), 'data': data}
    if saved is not None and (
        saved['dataset'] != dataset
        or resnet_model.architecture(resnet_model.make_hparams(saved['hparams'])) != resnet_model.architecture(hps)
    ):
        raise RunError(
            f'{FLAGS.log_root} holds a run of {_describe(saved)}; the flags ask for {_describe(config)}. '
            'Use another --log_root, or drop the flags that change the network.'
        )
    return config


def _data_flag(config, split):
    """The pattern and the flag it came from, for messages."""
    if split == 'test':
        return config['data']['eval_data_path'], '--eval_data_path' if FLAGS.eval_data_path else '--data_dir'
    return config['data']['train_data_path'], '--train_data_path' if FLAGS.train_data_path else '--data_dir'


def load_split(config, split):
    pattern, flag = _data_flag(config, split)
    data = config['data']
    return cifar_input.load_split(
        config['dataset'],
        data['data_source'],
        split,
        pattern=pattern,
        flag=flag,
        validation_size=data['validation_size'],
        tfds_data_dir=data['tfds_data_dir'],
        seed=data['seed'],
    )


def _make_dir(path, flag):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise RunError(f'{flag}: cannot write to {path}: {e.strerror}') from None
    return path


# ---------------------------------------------------------------------------
# Devices: a tf.distribute strategy for every mode; only the chief writes to the user's folders.


def configure_tensorflow():
    """Devices, op determinism and the mixed-precision policy, as the flags ask: before any op runs."""
    if FLAGS.num_gpus == 0:
        tf.config.set_visible_devices([], 'GPU')
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(DTYPE_POLICIES[FLAGS.dtype])


def make_strategy():
    name = FLAGS.distribution_strategy or {0: 'default', 1: 'one_device'}.get(FLAGS.num_gpus, 'mirrored')
    gpus = len(tf.config.list_physical_devices('GPU'))
    if FLAGS.num_gpus > gpus:
        raise RunError(f'--num_gpus: {FLAGS.num_gpus} asked for, but {gpus} GPUs are visible')
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'one_device':
        return tf.distribute.OneDeviceStrategy('/gpu:0' if FLAGS.num_gpus else '/cpu:0')
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy([f'/gpu:{i}' for i in range(FLAGS.num_gpus)] or None)
    if name == 'multi_worker_mirrored':
        if 'TF_CONFIG' not in os.environ:
            raise RunError('--distribution_strategy=multi_worker_mirrored: set TF_CONFIG to the cluster (see README)')
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=FLAGS.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def use_xla(strategy):
    """--jit_compile, refused with several replicas: their cross-replica updates cannot be XLA-compiled."""
    replicas = strategy.num_replicas_in_sync
    if FLAGS.jit_compile and replicas > 1:
        raise RunError(f'--jit_compile: XLA cannot compile this training step across {replicas} replicas; leave it off')
    return FLAGS.jit_compile


def is_chief(strategy):
    """The worker that writes checkpoints, summaries and metrics: the chief, else worker 0."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type or FLAGS.distribution_strategy == 'tpu':
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and 'chief' not in resolver.cluster_spec().jobs


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
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def weights_digest(model):
    """A short hash of the weights, logged at the end: equal on every worker, and across exact resumes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------
# Checkpoints carry the run configuration, so a folder's checkpoints can be checked before use.

CONFIG_KEY = 'run_config/.ATTRIBUTES/VARIABLE_VALUE'


def unreadable(path):
    """Why the checkpoint at `path` cannot be read, or None. Reads every tensor, so a truncated
    or corrupted file shows here rather than halfway through a restore."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:  # a truncated tensor raises IndexError
        return f'{path} is unreadable ({getattr(e, "message", e)})'.splitlines()[0]
    return None


def saved_config(path):
    """The run configuration a checkpoint of this trainer carries, or None."""
    reader = tf.train.load_checkpoint(path)
    return json.loads(reader.get_tensor(CONFIG_KEY)) if reader.has_tensor(CONFIG_KEY) else None


def foreign(path, config):
    """Why the (readable) checkpoint at `path` does not fit `config`'s network, or None."""
    saved = saved_config(path)
    if saved is None:
        return f'{path} was not written by this trainer'
    saved_network = (saved['dataset'], resnet_model.architecture(resnet_model.make_hparams(saved['hparams'])))
    network = (config['dataset'], resnet_model.architecture(resnet_model.make_hparams(config['hparams'])))
    if saved_network != network:
        return f'{path} belongs to a run of {_describe(saved)}, not {_describe(config)}'
    return None


def checkpoint_problem(path, config):
    return unreadable(path) or foreign(path, config)


def _usable_checkpoint(config):
    """The newest checkpoint in log_root, refused with a way out if it is damaged or foreign."""
    state = tf.train.get_checkpoint_state(FLAGS.log_root)
    if not state or not state.model_checkpoint_path:
        return None
    newest = state.model_checkpoint_path
    problem = checkpoint_problem(newest, config)
    if problem is None:
        return newest
    older = [p for p in reversed(state.all_model_checkpoint_paths[:-1]) if checkpoint_problem(p, config) is None]
    way_out = (
        f'{older[0]} is usable: move the files of {os.path.basename(newest)}.* away to resume from it'
        if older
        else 'no earlier checkpoint is usable: use another --log_root'
    )
    raise RunError(f'cannot resume: {problem}; {way_out}')


# ---------------------------------------------------------------------------
# Evaluation, shared by --mode=eval and --mode=train_and_eval.


class EvalPass:
    """Measures a model on a whole split, every example once.

    It keeps one iterator over the repeated batches: starting a tf.data iterator for every pass
    costs more than evaluating a thousand images.
    """

    def __init__(self, resnet, images, labels, batch_size, strategy):
        self.eval_step = resnet.build_eval_op(strategy, use_xla(strategy))
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
    """The confusion matrix drawn with matplotlib, as a [1, H, W, 4] image for tf.summary.image."""
    import io

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    size = min(4 + 0.35 * len(class_names), 24)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ax.imshow(confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1), cmap='Blues', vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f'step {step}: share of each true class')
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format='png')
    plt.close(fig)
    return tf.image.decode_png(png.getvalue())[tf.newaxis]


class Evaluator:
    """Evaluates a model on a whole split and reports to eval_dir: summaries and metrics.json."""

    def __init__(self, resnet, images, labels, strategy, chief, class_names):
        self.class_names = class_names
        self.eval_pass = EvalPass(resnet, images, labels, FLAGS.eval_batch_size, strategy)
        self.eval_dir = _make_dir(FLAGS.eval_dir, '--eval_dir') if chief else None
        self.writer = tf.summary.create_file_writer(self.eval_dir) if chief else tf.summary.create_noop_writer()
        previous = os.path.join(FLAGS.eval_dir, METRICS)
        self.best_precision = 0.0
        if os.path.exists(previous):
            with open(previous) as f:
                self.best_precision = json.load(f).get('best_precision', 0.0)

    def __call__(self, step, checkpoint):
        measured, confusion = self.eval_pass()
        metrics = {'step': step, **measured, 'checkpoint': checkpoint}
        self.best_precision = metrics['best_precision'] = max(self.best_precision, metrics['precision'])
        # Per class: the share of that class's images classified right.
        per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
        metrics['per_class_precision'] = {
            name: round(float(p), 4) for name, p in zip(self.class_names, per_class, strict=True)
        }
        metrics['confusion_matrix'] = confusion.tolist()  # rows: true classes, columns: predictions
        with self.writer.as_default(step=step):
            tf.summary.scalar('Precision', metrics['precision'])
            tf.summary.scalar('Best Precision', self.best_precision)
            tf.summary.scalar('loss', metrics['loss'])
            tf.summary.image('confusion_matrix', _confusion_image(confusion, self.class_names, step))
        self.writer.flush()
        if self.eval_dir:
            _write_json(os.path.join(self.eval_dir, METRICS), metrics)
        logging.info(
            'eval at step %d: loss %.4f, precision %.4f, best precision %.4f (%d images)',
            step,
            metrics['loss'],
            metrics['precision'],
            self.best_precision,
            metrics['num_examples'],
        )
        return metrics


def class_names(config):
    return cifar_input.CLASS_NAMES[config['dataset']]


def _eval_split():
    return 'validation' if FLAGS.eval_split == 'validation' else 'test'


def _checkpoints_to_evaluate():
    """With --eval_once, the existing checkpoints newest first; then each new one as it appears.

    A checkpoint becomes visible only once the trainer has finished writing it (the
    `checkpoint` index file is replaced atomically after the data), so none is half-written.
    """
    if FLAGS.eval_once:
        state = tf.train.get_checkpoint_state(FLAGS.log_root)
        if state and state.all_model_checkpoint_paths:
            yield from reversed(state.all_model_checkpoint_paths)
            return
    yield from tf.train.checkpoints_iterator(FLAGS.log_root, min_interval_secs=1, timeout=FLAGS.eval_timeout_secs)


def evaluate(config, strategy):
    """Evaluates checkpoints as they appear; stops after the one at train_steps, or on timeout."""
    hps = resnet_model.make_hparams(config['hparams'])
    latest = tf.train.latest_checkpoint(FLAGS.log_root)
    problem = latest and not unreadable(latest) and foreign(latest, config)
    if problem:
        raise RunError(f'cannot evaluate: {problem}')  # before anything is written
    images, labels = load_split(config, _eval_split())
    resnet = resnet_model.ResNet(hps, sync_batch_norm=FLAGS.sync_batch_norm)
    with strategy.scope():
        model = resnet.build_model()
        step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    evaluator = Evaluator(resnet, images, labels, strategy, is_chief(strategy), class_names(config))
    logging.info(
        'waiting for checkpoints in %s (up to %d s without a new one)', FLAGS.log_root, FLAGS.eval_timeout_secs
    )
    evaluated = 0
    for path in _checkpoints_to_evaluate():
        problem = unreadable(path)
        if problem:
            logging.warning('skipping %s', problem)
            continue
        problem = foreign(path, config)
        if problem:
            raise RunError(f'cannot evaluate: {problem}')
        checkpoint.restore(path).expect_partial()
        evaluator(int(step.numpy()), path)
        evaluated += 1
        if FLAGS.eval_once or int(step.numpy()) >= saved_config(path)['hparams']['train_steps']:
            return
    if not evaluated:
        raise RunError(
            f'--log_root: no usable checkpoint appeared in {FLAGS.log_root} within {FLAGS.eval_timeout_secs} s '
            '(--eval_timeout_secs)'
        )
    logging.info('no new checkpoint for %d s; stopping', FLAGS.eval_timeout_secs)


# ---------------------------------------------------------------------------
# Using a trained model: predict and export. The checkpoint says which network it holds.


def _trained_model():
    """The model of --checkpoint, or of the newest readable checkpoint in log_root, and its run config."""
    if FLAGS.checkpoint:
        candidates = [FLAGS.checkpoint]
    else:
        state = tf.train.get_checkpoint_state(FLAGS.log_root)
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
        if not candidates:
            raise RunError(f'--log_root: no checkpoint in {FLAGS.log_root}; train first, or pass --checkpoint')
    for path in candidates:
        problem = unreadable(path)
        if problem:
            if FLAGS.checkpoint:
                raise RunError(f'--checkpoint: {problem}')
            logging.warning('skipping %s', problem)
            continue
        config = saved_config(path)
        if config is None:
            raise RunError(f'{path} was not written by this trainer')
        model = resnet_model.ResNet(resnet_model.make_hparams(config['hparams'])).build_model()
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
        logging.info('using %s', path)
        return model, config
    raise RunError(f'--log_root: no readable checkpoint in {FLAGS.log_root}')


def predict():
    """Prints each image's top classes with their probabilities."""
    if not FLAGS.images:
        raise RunError('--images: give image files or binary batch files, comma-separated')
    model, config = _trained_model()
    names = class_names(config)
    examples = cifar_input.read_image_files(FLAGS.images, config['dataset'])
    images = tf.stack([image for _, image, _ in examples])
    probabilities = tf.concat(
        [
            tf.nn.softmax(model(cifar_input.standardize(batch), training=False))
            for batch in tf.data.Dataset.from_tensor_slices(images).batch(FLAGS.eval_batch_size)
        ],
        axis=0,
    ).numpy()
    right = 0
    for (name, _, label), probs in zip(examples, probabilities, strict=True):
        top = np.argsort(-probs)[: FLAGS.top_k]
        line = f'{name}: ' + ', '.join(f'{names[i]} {probs[i]:.3f}' for i in top)
        if label is not None:
            line += f' (true: {names[label]})'
            right += int(top[0] == label)
        print(line)
    labelled = sum(label is not None for _, _, label in examples)
    if labelled:
        print(f'precision on the {labelled} labelled images: {right / labelled:.4f}')


def export():
    """Writes a SavedModel: uint8 images [N, 32, 32, 3] in, class probabilities, ids and names out."""
    if not FLAGS.export_dir:
        raise RunError('--export_dir: give a new folder for the SavedModel')
    if os.path.exists(FLAGS.export_dir) and os.listdir(FLAGS.export_dir):
        raise RunError(f'--export_dir: {FLAGS.export_dir} is not empty; give a new folder (nothing is overwritten)')
    model, config = _trained_model()
    module = tf.Module()
    module.model = model
    module.class_names = tf.constant(class_names(config))

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name='images')])
    def serve(images):
        """The trainer's eval preprocessing, the network, and a softmax."""
        probabilities = tf.nn.softmax(model(cifar_input.standardize(images), training=False))
        class_ids = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return {
            'probabilities': probabilities,
            'class_ids': class_ids,
            'class_names': tf.gather(module.class_names, class_ids),
        }

    module.serve = serve
    staging = f'{os.path.normpath(FLAGS.export_dir)}.tmp-{os.getpid()}'  # a failed export leaves no half folder
    try:
        tf.saved_model.save(module, staging, signatures={'serving_default': serve})
        os.replace(staging, FLAGS.export_dir)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f'--export_dir: cannot write {FLAGS.export_dir}: {e.strerror}') from None
    print(f'exported {config["preset"]} on {config["dataset"]} to {FLAGS.export_dir}')


# ---------------------------------------------------------------------------
# Training.


class _StopRequest:
    """Turns SIGTERM and SIGINT into a request the loop honours after its current step."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name


def _image_summary(images):
    """Standardized images rescaled to [0, 1] per image, for TensorBoard."""
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return (images - low) / tf.maximum(high - low, 1e-6)


def _format_seconds(seconds):
    return time.strftime('%H:%M:%S', time.gmtime(max(0, seconds)))


def train(config, strategy, evaluate_every=None):
    """Trains to train_steps, checkpointing as it goes; resumes from the newest checkpoint."""
    hps = resnet_model.make_hparams(config['hparams'])
    seed = config['data']['seed']
    replicas = strategy.num_replicas_in_sync
    if hps.batch_size % replicas:
        raise RunError(
            f'hparam batch_size: the global batch {hps.batch_size} does not divide among the {replicas} replicas; '
            f'use a multiple of {replicas}'
        )
    chief = is_chief(strategy)
    if chief:
        log_root = _make_dir(FLAGS.log_root, '--log_root')
    else:  # other workers save too (saving can take part in collectives), to a folder of their own they delete
        log_root = tempfile.mkdtemp(prefix='resnet-worker-')
        atexit.register(shutil.rmtree, log_root, ignore_errors=True)
    images, labels = load_split(config, 'train')

    keras.utils.set_random_seed(seed)
    resnet = resnet_model.ResNet(hps, sync_batch_norm=FLAGS.sync_batch_norm)
    with strategy.scope():
        model = resnet.build_model()
    train_step = resnet.build_train_op(strategy, use_xla(strategy))
    step_var = resnet.global_step
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=resnet.optimizer, step=step_var, run_config=tf.Variable(json.dumps(config))
    )
    manager = tf.train.CheckpointManager(
        checkpoint, log_root, max_to_keep=FLAGS.keep_checkpoints, checkpoint_name='ckpt'
    )
    sys.stdout.write(f'total_params: {resnet_model.count_params(model)}\n')
    sys.stdout.flush()
    resume_from = _usable_checkpoint(config)
    if resume_from:
        checkpoint.restore(resume_from).expect_partial().assert_existing_objects_matched()
        checkpoint.run_config.assign(json.dumps(config))
        logging.info('resumed from %s', resume_from)
    step = int(step_var.numpy())
    if step > hps.train_steps:
        raise RunError(f'--train_steps: {hps.train_steps} is below step {step} of {resume_from}')
    if chief:
        _write_json(os.path.join(log_root, RUN_CONFIG), config)

    evaluator = None
    if evaluate_every:
        eval_images, eval_labels = load_split(config, _eval_split())
        evaluator = Evaluator(resnet, eval_images, eval_labels, strategy, chief, class_names(config))
    if chief:
        writer = tf.summary.create_file_writer(_make_dir(FLAGS.train_dir, '--train_dir'))
    else:
        writer = tf.summary.create_noop_writer()
    dataset = distributed_train_dataset(strategy, images, labels, hps, seed, step)
    stop = _StopRequest()
    logging.info(
        'training %s on %d %s images from step %d to %d',
        config['preset'],
        int(labels.shape[0]),
        config['dataset'],
        step,
        hps.train_steps,
    )

    saved_step = step if manager.latest_checkpoint else None

    def check_finite(step, cost):
        """Stops a diverged run before it writes a checkpoint: a NaN checkpoint would poison a resume."""
        if not (np.isfinite(float(cost)) and all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.weights)):
            last_good = manager.latest_checkpoint or 'none (no checkpoint was written before)'
            raise RunError(
                f'training diverged at step {step}: the loss is {float(cost)}; no checkpoint was written '
                f'from it; the last good one is {last_good}; lower lrn_rate or add warmup_steps'
            )

    def save(step, cost):
        nonlocal saved_step
        check_finite(step, cost)
        path = manager.save(checkpoint_number=step)
        saved_step = step
        logging.info('saved %s', path)
        return path

    interval_start, interval_step, images_written, metrics = time.time(), step, False, None
    for batch_images, batch_labels in dataset:
        if step >= hps.train_steps or stop.signal:
            break
        metrics = train_step(batch_images, batch_labels)
        step += 1
        last = step == hps.train_steps
        if step % FLAGS.summary_every_steps == 0 or last:
            values = {name: float(value) for name, value in metrics.items()}
            check_finite(step, values['cost'])
            elapsed = time.time() - interval_start
            images_per_sec = (step - interval_step) * hps.batch_size / elapsed
            remaining = (hps.train_steps - step) * hps.batch_size / images_per_sec
            logging.info(
                'step %d/%d: loss %.4f, precision %.4f, learning rate %.5f, %.1f images/sec, %s remaining',
                step,
                hps.train_steps,
                values['cost'],
                values['precision'],
                values['learning_rate'],
                images_per_sec,
                _format_seconds(remaining),
            )
            with writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar('Precision' if name == 'precision' else name, value)
                tf.summary.scalar('images/sec', images_per_sec)
                if not images_written:
                    first_replica = strategy.experimental_local_results(batch_images)[0]
                    tf.summary.image('images', _image_summary(first_replica), max_outputs=4)
                    images_written = True
            writer.flush()
            interval_start, interval_step = time.time(), step
        if step % FLAGS.checkpoint_every_steps == 0 or last or (evaluator and step % evaluate_every == 0):
            paused = time.time()
            path = save(step, metrics['cost'])
            if evaluator and (step % evaluate_every == 0 or last):
                evaluator(step, path)
            interval_start += time.time() - paused  # images/sec counts training time only
    if stop.signal:
        if metrics is not None and saved_step != step:
            save(step, metrics['cost'])
        logging.info('stopped by %s at step %d; run the same command to resume', stop.signal, step)
        sys.exit(128 + signal.Signals[stop.signal].value)
    logging.info('training done at step %d; weights digest %s', step, weights_digest(model))


# ---------------------------------------------------------------------------


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    configure_tensorflow()
    if FLAGS.mode == 'predict':
        return predict()
    if FLAGS.mode == 'export':
        return export()
    strategy = make_strategy()  # first: a multi-worker strategy must exist before TensorFlow's runtime starts
    use_xla(strategy)  # refuses --jit_compile with several replicas before anything is written
    FLAGS.train_dir = FLAGS.train_dir or os.path.join(FLAGS.log_root, 'train')
    FLAGS.eval_dir = FLAGS.eval_dir or os.path.join(FLAGS.log_root, 'eval')
    config = resolve_run_config()
    if FLAGS.mode == 'train':
        train(config, strategy)
    elif FLAGS.mode == 'train_and_eval':
        train(config, strategy, evaluate_every=FLAGS.eval_every_steps)
    else:
        evaluate(config, strategy)


def run(argv):
    """main() with user mistakes reported as one line and a non-zero exit, not a traceback."""
    try:
        main(argv)
    except (resnet_model.HParamsError, cifar_input.DataError, RunError) as e:
        logging.flush()
        sys.stderr.write(f'error: {e}\n')
        sys.exit(2)


if __name__ == '__main__':
    flags.mark_flag_as_required('log_root')
    app.run(run)
