"""Measures training, eval and input-pipeline speed and peak memory, as a training run sees them.

    python scripts/benchmark.py --hparams=resnet32 [--data_source=synthetic|binary --data_dir=DIR] \
        [--steps=N] [--json]

Training runs the trainer's own input pipeline and compiled step (resnet_main.py's defaults, no
special flags); each rate is timed after warm-up. The input pipeline is timed on its own, with
full training augmentation, on the real files when --data_dir is given (or the shared CIFAR-10
subset is beside the checkout), else on synthetic images.

The report also describes the machine (machine.describe_machine): the CPU model, its AVX2, AVX-512,
AVX512_BF16, AVX512_FP16 and AMX flags, the instruction set oneDNN reports it dispatches to (one small convolution
in a child process with ONEDNN_VERBOSE=1), TensorFlow's thread settings and the GPUs, so that rates
from different machines are not compared as if they were one.

TensorFlow starts as a run's does, with startup.setup() once the flags are read: the modules that
import it are imported after that, where they are used.
"""

import json
import os
import resource
import time

from absl import flags

from resnet_cifar import choices, datasets, errors, run_config, startup

flags.DEFINE_string('hparams', 'resnet32', 'A preset or a JSON file, as resnet_main.py --hparams.')
flags.DEFINE_string('hparams_override', '', 'As resnet_main.py --hparams_override.')
flags.DEFINE_enum('dataset', 'cifar10', list(datasets.DATASETS), 'cifar10 or cifar100.')
flags.DEFINE_enum('data_source', 'binary', ['binary', 'synthetic'], 'Training images: the files, or random ones.')
flags.DEFINE_string('data_dir', None, 'Folder of the binary batch files (default: the shared CIFAR-10 subset).')
flags.DEFINE_integer('eval_batch_size', 100, 'As resnet_main.py --eval_batch_size.', lower_bound=1)
flags.DEFINE_enum('dtype', 'float32', list(choices.DTYPES), 'As resnet_main.py --dtype.')
flags.DEFINE_bool('jit_compile', False, 'As resnet_main.py --jit_compile.')
flags.DEFINE_integer('seed', 0, 'Seed of weight initialization, data order and augmentation.')
flags.DEFINE_integer('steps', 20, 'Timed training steps (and input batches x 10).', lower_bound=1)
flags.DEFINE_integer('warmup', 3, 'Untimed steps first: tracing and allocation.', lower_bound=1)
flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
FLAGS = flags.FLAGS


def _rate(count, seconds):
    return round(count / seconds, 1)


def _load(split):
    import cifar_input

    data_dir = FLAGS.data_dir or (datasets.SHARED_SUBSET if os.path.isdir(datasets.SHARED_SUBSET) else None)
    source = FLAGS.data_source
    if source == 'binary' and not data_dir:
        raise errors.UserError('needed with --data_source=binary', 'data_dir')
    if source == 'synthetic' and split == 'input' and data_dir:
        source = 'binary'  # the input pipeline is always measured on real files when there are some
    train_pattern, test_pattern = datasets.data_patterns(FLAGS.dataset, data_dir) if data_dir else (None, None)
    pattern = test_pattern if split == 'test' else train_pattern
    images, labels = cifar_input.load_split(
        FLAGS.dataset, source, 'test' if split == 'test' else 'train', pattern=pattern, seed=FLAGS.seed
    )
    return images, labels, source


def measure_input(hps):
    import cifar_input

    images, labels, source = _load('input')
    batches = iter(cifar_input.train_dataset(images, labels, hps.batch_size, seed=FLAGS.seed))
    for _ in range(FLAGS.warmup):
        next(batches)
    count = FLAGS.steps * 10
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return {'input_images_per_sec': _rate(count * hps.batch_size, time.perf_counter() - start), 'input_data': source}


def measure_train_and_eval(hps, strategy):
    import resnet_model
    from resnet_cifar import devices, evaluation, training

    images, labels, source = _load('train')
    resnet = resnet_model.ResNet(hps)
    train_op = resnet.build_train_op(strategy, devices.check_xla(FLAGS.jit_compile, strategy))
    train_step = train_op.train_step
    batches = iter(training.distributed_train_dataset(strategy, images, labels, hps, FLAGS.seed, 0))
    for _ in range(FLAGS.warmup):
        float(train_step(*next(batches))['cost'])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        metrics = train_step(*next(batches))
    float(metrics['cost'])  # waits for the last step
    train_rate = _rate(FLAGS.steps * hps.batch_size, time.perf_counter() - start)

    eval_images, eval_labels, _ = _load('test')
    scorer = evaluation.SplitScorer(hps, eval_images, eval_labels, FLAGS.eval_batch_size, strategy, FLAGS.jit_compile)
    scorer(train_op.state.model)
    # As many images as training saw, at least one whole pass: one small pass is too short to time.
    start, count = time.perf_counter(), 0
    while count < FLAGS.steps * hps.batch_size:
        count += scorer(train_op.state.model)[0]['num_examples']
    return {
        'train_images_per_sec': train_rate,
        'eval_images_per_sec': _rate(count, time.perf_counter() - start),
        'train_data': source,
    }


def main(argv):
    del argv
    hps = run_config.build_hparams(FLAGS.hparams, FLAGS.hparams_override, FLAGS.dataset)  # before TensorFlow
    dtype = startup.setup(dtype=FLAGS.dtype, name=lambda key: f'--{key}')
    import tensorflow as tf

    from resnet_cifar import devices, machine

    strategy = devices.make_strategy()  # as a run with no device flags: every visible GPU, else the CPU
    result = {
        'hparams': FLAGS.hparams,
        'batch_size': hps.batch_size,
        'eval_batch_size': FLAGS.eval_batch_size,
        'dtype': dtype,
        'jit_compile': FLAGS.jit_compile,
        'TF_ENABLE_ONEDNN_OPTS': os.environ.get('TF_ENABLE_ONEDNN_OPTS'),  # unset: TensorFlow's own choice
        'strategy': devices.strategy_devices(strategy)[0],
        'replicas': strategy.num_replicas_in_sync,
        **machine.describe_machine(),
        'onednn_isa': machine.onednn_isa(),  # before the timing, in a child process: the rates are not affected
    }
    result.update(measure_train_and_eval(hps, strategy))
    result.update(measure_input(hps))
    result['peak_memory_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.update({'steps': FLAGS.steps, 'tensorflow': tf.__version__})
    if FLAGS.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f'{key:24} {value}')


if __name__ == '__main__':
    errors.run_program(main, FLAGS)
