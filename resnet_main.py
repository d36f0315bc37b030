"""ResNet on CIFAR-10/100 from the command line: train, evaluate, predict, export.

    python resnet_main.py --mode=train --data_dir=DIR --log_root=runs/r32
    python resnet_main.py --mode=eval --log_root=runs/r32 --eval_once

A run lives in --log_root: hparams.json (what the run is), checkpoints ckpt-STEP, train/ and
eval/ summaries and eval/metrics.json. A later train resumes it; eval reads what it needs
from hparams.json, so the training flags are never repeated.

This file reads the flags, builds one run_config.RunConfig from them over what the run saved,
picks the devices and the strategy, and calls the mode's function. Nothing below it knows the
command line: training.train, evaluation.evaluate and trained_model.predict/export take the
configuration (or a checkpoint) and a strategy, and can be called from Python.
"""

import dataclasses
import logging as logging_std
import os
import signal
import sys

from resnet_cifar import devices  # first: it sets TensorFlow's environment before TensorFlow is imported

# isort: split
from absl import app, flags, logging

import cifar_input
from resnet_cifar import evaluation, run_config, run_folder, trained_model, training
from resnet_cifar.errors import UserError

# The original's flags, same names and meaning.
flags.DEFINE_enum('dataset', 'cifar10', list(cifar_input.DATASETS), 'cifar10 or cifar100.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'train_and_eval', 'predict', 'export'], 'What to run.')
flags.DEFINE_string('train_data_path', None, 'File pattern of the training batch files.')
flags.DEFINE_string('eval_data_path', None, 'File pattern of the test batch files.')
flags.DEFINE_string('log_root', None, 'Directory of the run: checkpoints, hparams.json, summaries.')
flags.DEFINE_string('train_dir', None, 'Training summaries (default LOG_ROOT/train).')
flags.DEFINE_string('eval_dir', None, 'Eval summaries and metrics.json (default LOG_ROOT/eval).')
flags.DEFINE_bool('eval_once', False, 'Evaluate the newest checkpoint once, then exit.')
flags.DEFINE_integer(
    'num_gpus', None, 'GPUs to use. Default: every visible one; 0: the CPU; several: MirroredStrategy.', lower_bound=0
)
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
flags.DEFINE_enum('eval_split', 'test', list(run_config.EVAL_SPLITS), 'What eval measures.')
flags.DEFINE_string('hparams', 'resnet32', f'A preset ({", ".join(run_config.preset_names())}) or a JSON file.')
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
flags.DEFINE_enum(
    'distribution_strategy',
    None,
    list(devices.STRATEGIES),
    'tf.distribute strategy. Default: from the GPUs used (none: default, 1: one_device, more: mirrored).',
)
flags.DEFINE_string('tpu', None, 'TPU name or grpc:// address, with --distribution_strategy=tpu.')
flags.DEFINE_bool('sync_batch_norm', False, 'Batch-norm statistics over the global batch, across replicas.')
flags.DEFINE_enum(
    'dtype', 'float32', list(devices.DTYPE_POLICIES), 'Compute dtype; variables, logits and loss stay float32.'
)
flags.DEFINE_bool(
    'jit_compile',
    False,
    'XLA-compile the train and eval steps, with one replica (XLA cannot compile the cross-replica updates '
    "of this step). Off by default: on the CPUs measured, TensorFlow's oneDNN kernels are faster (README).",
)

FLAGS = flags.FLAGS
DATA_PATHS = ('train_data_path', 'eval_data_path')
# RunConfig fields that are this invocation's options, each set by the flag of the same name.
OPTIONS = (
    'train_dir',
    'eval_dir',
    'checkpoint_every_steps',
    'keep_checkpoints',
    'summary_every_steps',
    'eval_every_steps',
    'eval_batch_size',
    'eval_split',
    'eval_once',
    'eval_timeout_secs',
    'jit_compile',
    'sync_batch_norm',
)


def build_config():
    """The run to do: what LOG_ROOT/hparams.json saved, with the flags the user passed on top."""
    saved = run_folder.read_config(FLAGS.log_root)

    def given(name):
        return FLAGS[name].present or saved is None

    dataset = FLAGS.dataset if given('dataset') else saved.dataset
    if given('hparams'):
        preset, hps = FLAGS.hparams, run_config.load_preset(FLAGS.hparams)
    else:
        preset, hps = saved.preset, saved.hparams
    overrides = run_config.parse_overrides(FLAGS.hparams_override)
    if FLAGS.train_steps is not None:
        overrides['train_steps'] = FLAGS.train_steps
    hps = run_config.override(hps, overrides, dataset)

    data_settings = [field.name for field in dataclasses.fields(run_config.DataSettings)]
    data = {name: getattr(FLAGS, name) if given(name) else getattr(saved.data, name) for name in data_settings}
    if FLAGS.data_dir:  # the paths follow a --data_dir, unless given themselves
        data.update({name: getattr(FLAGS, name) for name in DATA_PATHS})
    data = run_config.data_settings(dataset, FLAGS.data_dir, **data)
    options = {name: getattr(FLAGS, name) for name in OPTIONS}
    config = run_config.RunConfig(FLAGS.log_root, dataset, preset, hps, data, **options)
    if saved is not None and saved.network() != config.network():
        raise run_folder.RunError(
            f'{FLAGS.log_root} holds a run of {saved.describe()}; the flags ask for {config.describe()}. '
            'Use another log_root, or drop the flags that change the network.',
            mentions=['log_root'],
        )
    return config


def flag_name(key):
    """How a setting is named on the command line: its flag (the data paths' is --data_dir unless
    the user gave the path itself), or the key as it is when it is no flag (a file, an hparam)."""
    if key in DATA_PATHS and not FLAGS[key].present:
        return '--data_dir'
    return f'--{key}' if key in FLAGS else key


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    devices.configure_tensorflow(FLAGS.num_gpus, FLAGS.deterministic, FLAGS.dtype)
    if FLAGS.mode == 'predict':
        predictions = trained_model.predict(FLAGS.images, FLAGS.log_root, FLAGS.checkpoint, FLAGS.eval_batch_size)
        print('\n'.join(trained_model.describe(predictions, FLAGS.top_k)))
        return
    if FLAGS.mode == 'export':
        config = trained_model.export(FLAGS.export_dir, FLAGS.log_root, FLAGS.checkpoint)
        print(f'exported {config.preset} on {config.dataset} to {FLAGS.export_dir}')
        return
    # First: a multi-worker strategy must exist before TensorFlow's runtime starts.
    strategy = devices.make_strategy(FLAGS.distribution_strategy, FLAGS.num_gpus, FLAGS.tpu)
    logging.info('%s', devices.startup_line(strategy, FLAGS.dtype, flag_name))
    devices.check_xla(FLAGS.jit_compile, strategy)  # refused with several replicas before anything is written
    config = build_config()
    if FLAGS.mode == 'eval':
        evaluation.evaluate(config, strategy)
        return
    result = training.train(config, strategy, evaluate=FLAGS.mode == 'train_and_eval')
    if result.stopped_by:
        sys.exit(128 + signal.Signals[result.stopped_by].value)


class Stopped(Exception):
    """SIGINT or SIGTERM outside the training loop (which saves first, then returns)."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


class _TensorFlowInfo(logging_std.Filter):
    """Drops TensorFlow's own INFO lines (one per save): a run's output is the project's lines."""

    def filter(self, record):
        return record.levelno > logging_std.INFO or f'{os.sep}tensorflow{os.sep}' not in record.pathname


def run(argv):
    """main() with user mistakes reported as one line naming the flag and exit code 2, and a stop
    by SIGINT or SIGTERM as one line and 128 + the signal's number: never a traceback."""
    logging.get_absl_logger().addFilter(_TensorFlowInfo())
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        main(argv)
    except UserError as e:
        logging.flush()
        sys.stderr.write(f'error: {e.line(flag_name)}\n')
        sys.exit(2)
    except Stopped as e:
        logging.info('stopped by %s', e)
        sys.exit(128 + signal.Signals[str(e)].value)


def entry_point():
    """`python resnet_main.py` and the installed `resnet-cifar` command."""
    flags.mark_flag_as_required('log_root')
    try:
        app.run(run)
    except SystemExit as e:  # absl ends --help with exit code 1; asking for help is no failure
        help_asked = any(arg in ('-h', '-?', '--help', '--helpshort', '--helpfull') for arg in sys.argv[1:])
        sys.exit(0 if help_asked and e.code == 1 else e.code)


if __name__ == '__main__':
    entry_point()
