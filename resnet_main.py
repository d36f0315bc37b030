"""Trains, evaluates, predicts with and exports ResNets on CIFAR-10/100.

    python resnet_main.py --mode=train --data_dir=DIR --log_root=runs/r32
    python resnet_main.py --mode=eval --log_root=runs/r32 --eval_once
    python resnet_main.py --mode=predict --log_root=runs/r32 --images=cat.png

Installed with pip, the `resnet-cifar` command (or `python -m resnet_cifar`) takes the same flags.
A run lives in --log_root, which every mode needs: hparams.json (what the run is), checkpoints
ckpt-STEP, train/ and eval/ summaries and eval/metrics.json. Training again resumes the run; eval,
predict and export read what they need from hparams.json, so the training flags are never repeated.
"""

# For developers: this file reads the flags (defined without TensorFlow, so --help is instant),
# builds one run_config.RunConfig from them over what the run saved, starts TensorFlow with
# startup.setup() and calls the mode's function. Nothing below it knows the command line:
# training.train, evaluation.evaluate_checkpoints and trained_model.predict/export take the
# configuration (or a checkpoint) and a strategy, and can be called from Python.

import dataclasses
import time

from absl import flags, logging

from resnet_cifar import choices, cluster_rendezvous, datasets, errors, presets, run_config, startup
from resnet_cifar.hparams_check import make_hparams
from resnet_cifar.hparams_schema import MAX_BATCH, MAX_STEPS

# The command the user runs, as --help shows it: `resnet-cifar` when resnet_cifar/__main__.py runs
# this file (it sets PROGRAM), else this file.
PROGRAM = globals().get('PROGRAM', 'python resnet_main.py')
__doc__ = __doc__.replace('python resnet_main.py', PROGRAM)

# The original's flags, same names and meaning.
flags.DEFINE_enum('dataset', 'cifar10', list(datasets.DATASETS), 'cifar10 or cifar100.')
flags.DEFINE_enum('mode', 'train', list(choices.MODES), 'What to run.')
flags.DEFINE_string('train_data_path', None, 'File pattern of the training batch files.')
flags.DEFINE_string('eval_data_path', None, 'File pattern of the test batch files.')
flags.DEFINE_string('log_root', None, 'Required. Directory of the run: checkpoints, hparams.json, summaries.')
flags.DEFINE_string('train_dir', None, 'Training summaries (default LOG_ROOT/train).')
flags.DEFINE_string('eval_dir', None, 'Eval summaries and metrics.json (default LOG_ROOT/eval).')
flags.DEFINE_bool('eval_once', False, 'Evaluate the newest checkpoint once, then exit.')
flags.DEFINE_integer(
    'num_gpus',
    None,
    'GPUs to use. Default: every visible one; 0: the CPU; several: MirroredStrategy.',
    lower_bound=0,
    upper_bound=4096,
)
# Added.
flags.DEFINE_string(
    'data_dir',
    None,
    'Folder with the binary batch files, or the folder holding cifar-10-batches-bin'
    ' / cifar-100-binary; the train and eval patterns follow from it.',
)
flags.DEFINE_enum('data_source', 'binary', list(choices.DATA_SOURCES), 'Where images come from.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data directory (with --data_source=tfds).')
flags.DEFINE_integer(
    'validation_size',
    0,
    'Hold out the last N training images as a validation split.',
    lower_bound=0,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_enum('eval_split', 'test', list(choices.EVAL_SPLITS), 'What eval measures.')
flags.DEFINE_string('hparams', 'resnet32', f'A preset ({", ".join(choices.preset_names())}) or a JSON file.')
flags.DEFINE_string(
    'hparams_override', '', 'Comma-separated key=value, lists in brackets: train_steps=960,lr_boundaries=[480,720].'
)
flags.DEFINE_integer('train_steps', None, 'Stop training at this step (overrides the preset).', lower_bound=1)
flags.DEFINE_integer(
    'checkpoint_every_steps',
    1000,
    'Save a checkpoint every N steps (and at the end).',
    lower_bound=1,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_integer(
    'keep_checkpoints', 5, 'How many of the newest checkpoints to keep.', lower_bound=1, upper_bound=10000
)
flags.DEFINE_integer(
    'summary_every_steps', 100, 'Log and write training summaries every N steps.', lower_bound=1, upper_bound=MAX_STEPS
)
flags.DEFINE_integer(
    'eval_every_steps',
    1000,
    'With --mode=train_and_eval: evaluate every N steps.',
    lower_bound=1,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_integer(
    'eval_batch_size',
    100,
    'Eval batch size (any size; the last batch may be partial).',
    lower_bound=1,
    upper_bound=MAX_BATCH,
)
flags.DEFINE_integer(
    'eval_timeout_secs',
    600,
    'Eval gives up after this long without a new checkpoint.',
    lower_bound=0,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_integer('seed', 0, 'Seed of weight initialization, data order and augmentation.')
flags.DEFINE_bool(
    'deterministic',
    False,
    "TensorFlow's op determinism: bit-exact resumes on GPUs too (the CPU kernels here already are), at some speed.",
)

# Using a trained model.
flags.DEFINE_list('images', [], 'With --mode=predict: image files (PNG, JPEG, ...) and/or binary batch files (.bin).')
flags.DEFINE_integer(
    'top_k', 3, 'With --mode=predict: how many classes to print per image.', lower_bound=1, upper_bound=100
)
flags.DEFINE_integer(
    'max_images',
    None,
    'With --mode=predict: print the first N images only (the precision is still over all).',
    lower_bound=0,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_string('checkpoint', None, 'With --mode=predict or export: this checkpoint instead of the newest.')
flags.DEFINE_string('export_dir', None, 'With --mode=export: a new folder for the exported model.')
flags.DEFINE_enum(
    'export_format',
    'saved_model',
    list(choices.EXPORT_FORMATS),
    'With --mode=export: a SavedModel folder, or model.keras, model.tflite (LiteRT) or model.onnx (docs/export.md).',
)
# Scaling out, through tf.distribute and Keras mixed precision.
flags.DEFINE_enum(
    'distribution_strategy',
    None,
    list(choices.STRATEGIES),
    'tf.distribute strategy. Default: from the GPUs used (none: default, 1: one_device, more: mirrored).',
)
flags.DEFINE_string('tpu', None, 'TPU name or grpc:// address, with --distribution_strategy=tpu.')
flags.DEFINE_integer(
    'cluster_timeout_secs',
    600,
    'With --distribution_strategy=multi_worker_mirrored: give up when the other workers have not all started by then.',
    lower_bound=1,
    upper_bound=MAX_STEPS,
)
flags.DEFINE_bool('sync_batch_norm', False, 'Batch-norm statistics over the global batch, across replicas.')
flags.DEFINE_enum(
    'dtype',
    'float32',
    list(choices.DTYPES),
    'Compute dtype; variables, logits and loss stay float32. auto: the one measured fastest on this machine '
    '(measured once, cached; docs/performance.md).',
)
flags.DEFINE_bool(
    'jit_compile',
    False,
    'XLA-compile the train and eval steps, with one replica (XLA cannot compile the cross-replica updates '
    "of this step). Off by default: on the CPUs measured, TensorFlow's oneDNN kernels are faster "
    '(docs/performance.md).',
)
flags.DEFINE_enum(
    'input',
    'auto',
    list(choices.INPUT_PATHS),
    "Training batches: tf_data (the host's cores), device (the split on each replica's device, augmented there), or "
    'auto: device on a GPU where the split takes at most a tenth of its memory, else tf_data (docs/performance.md).',
)
flags.DEFINE_integer(
    'steps_per_call',
    10,
    'The most training steps in one compiled call; a stop request waits at most that many steps.',
    lower_bound=1,
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
    'input',
    'steps_per_call',
)


def hparams_overrides():
    """--hparams_override with --train_steps, and the flag each key came from (for errors); an unknown
    key or a value of the wrong type is refused here (the ranges depend on the run's preset:
    build_config checks them)."""
    overrides = presets.parse_overrides(FLAGS.hparams_override)
    make_hparams(overrides, source='hparams_override', ranges=False)
    if FLAGS.train_steps is None:
        return overrides, {}
    if 'train_steps' in overrides:
        raise errors.UserError('also given in --hparams_override; give train_steps once', 'train_steps')
    return {**overrides, 'train_steps': FLAGS.train_steps}, {'train_steps': 'train_steps'}


def check_before_start():
    """The mistakes that can be told at once, before TensorFlow starts (build_config checks all):
    a preset or a folder of the other dataset asked for, an override's key or type."""
    if FLAGS['hparams'].present:
        presets.load_preset(FLAGS.hparams)
    if FLAGS['dataset'].present and FLAGS.data_dir:
        datasets.data_patterns(FLAGS.dataset, FLAGS.data_dir)
    hparams_overrides()
    if FLAGS.dtype == 'auto' and FLAGS.distribution_strategy in ('multi_worker_mirrored', 'tpu'):
        raise errors.UserError(
            'auto measures this machine alone; choose one of float32, bfloat16, float16 for all the workers',
            'dtype',
            mentions=['distribution_strategy'],
        )


def build_config(dtype):
    """The run to do: what LOG_ROOT/hparams.json saved, with the flags the user passed on top,
    computed in `dtype` (what --dtype resolved to: auto picks one)."""
    from resnet_cifar import run_folder  # it imports TensorFlow: after startup.setup()

    saved = run_folder.read_config(FLAGS.log_root)

    def given(name):
        return FLAGS[name].present or saved is None

    dataset = FLAGS.dataset if given('dataset') else saved.dataset
    # A preset (name or file) asked for, else the saved run's: its name and its hparams.
    preset, base = (FLAGS.hparams, FLAGS.hparams) if given('hparams') else (saved.preset, saved.hparams)
    overrides, sources = hparams_overrides()
    hps = presets.build_hparams(base, overrides, dataset, sources)

    data_settings = [field.name for field in dataclasses.fields(run_config.DataSettings)]
    data = {name: getattr(FLAGS, name) if given(name) else getattr(saved.data, name) for name in data_settings}
    if FLAGS.data_dir:  # the paths follow a --data_dir, unless given themselves
        data.update({name: getattr(FLAGS, name) for name in DATA_PATHS})
    data = run_config.data_settings(dataset, FLAGS.data_dir, **data)
    options = {name: getattr(FLAGS, name) for name in OPTIONS}
    config = run_config.RunConfig(FLAGS.log_root, dataset, preset, hps, data, dtype, **options)
    if saved is not None and saved.network() != config.network():
        raise errors.RunError(
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
    return errors.flag_name(key, FLAGS)


def main(argv):
    if len(argv) > 1:
        raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    started = time.time()
    check_before_start()
    dtype = startup.setup(FLAGS.num_gpus, FLAGS.deterministic, FLAGS.dtype, flag_name, command=True)
    from resnet_cifar import devices, evaluation, machine, run_summary, trained_model, training

    if FLAGS.mode == 'predict':
        predictions = trained_model.predict(FLAGS.images, FLAGS.log_root, FLAGS.checkpoint, FLAGS.eval_batch_size)
        print('\n'.join(trained_model.describe(predictions, FLAGS.top_k, FLAGS.max_images)))
        return 0
    if FLAGS.mode == 'export':
        config = trained_model.export(FLAGS.export_dir, FLAGS.log_root, FLAGS.checkpoint, FLAGS.export_format)
        print(f'exported {config.preset} on {config.dataset} to {FLAGS.export_dir}')
        return 0
    if FLAGS.distribution_strategy == 'multi_worker_mirrored':  # TensorFlow's own wait ignores signals
        cluster_rendezvous.wait_for_cluster(FLAGS.cluster_timeout_secs)
    # First: a multi-worker strategy must exist before TensorFlow's runtime starts.
    strategy = devices.make_strategy(FLAGS.distribution_strategy, FLAGS.num_gpus, FLAGS.tpu)
    logging.info('%s', machine.startup_line(strategy, dtype, flag_name))
    devices.refuse_xla_across_replicas(
        FLAGS.jit_compile, strategy
    )  # refused with several replicas before anything is written
    config = build_config(dtype)
    if FLAGS.mode == 'eval':
        evaluation.evaluate_checkpoints(config, strategy)
        return 0
    result = training.train(config, strategy, evaluate=FLAGS.mode == 'train_and_eval')
    if devices.is_chief(strategy):
        for line in run_summary.lines(config, result.step, time.time() - started):
            logging.info('%s', line)
    return errors.exit_code(result.stopped_by) if result.stopped_by else 0


def run():
    """The command line: the flags parsed (--log_root required), then main() with a mistake as one
    line naming the flag and exit code 2, a stop by SIGINT or SIGTERM as 128 + its number."""
    flags.mark_flag_as_required('log_root')
    errors.run_program(main, FLAGS, name=flag_name)


if __name__ == '__main__':
    run()
