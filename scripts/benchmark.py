"""Measures training, eval and input-pipeline speed and peak memory, as a training run sees them.

    python scripts/benchmark.py --hparams=resnet32 [--data_source=synthetic|binary --data_dir=DIR] \
        [--steps=N] [--json]

Training runs the trainer's own input pipeline and compiled step (resnet_main.py's defaults, no
special flags); each rate is timed after warm-up. The input pipeline is timed on its own, with
full training augmentation, on the real files when --data_dir is given (or the shared CIFAR-10
subset is beside the checkout), else on synthetic images.
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import resnet_main  # noqa: E402  (first: it sets TensorFlow's environment; also defines the shared flags)

# isort: split
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import cifar_input  # noqa: E402
import resnet_model  # noqa: E402

flags.DEFINE_integer('steps', 20, 'Timed training steps (and input batches x 10).', lower_bound=1)
flags.DEFINE_integer('warmup', 3, 'Untimed steps first: tracing and allocation.', lower_bound=1)
flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
FLAGS = flags.FLAGS
SHARED_SUBSET = os.path.join(os.path.dirname(resnet_model.PRESETS_DIR), '..', 'shared', 'data', 'cifar10-subset')


def _rate(count, seconds):
    return round(count / seconds, 1)


def _load(split):
    data_dir = FLAGS.data_dir or (SHARED_SUBSET if os.path.isdir(SHARED_SUBSET) else None)
    source = FLAGS.data_source
    if source == 'binary' and not data_dir:
        raise cifar_input.DataError('--data_dir: needed with --data_source=binary')
    if source == 'synthetic' and split == 'input' and data_dir:
        source = 'binary'  # the input pipeline is always measured on real files when there are some
    train_pattern, test_pattern = cifar_input.data_patterns(FLAGS.dataset, data_dir) if data_dir else (None, None)
    pattern = test_pattern if split == 'test' else train_pattern
    images, labels = cifar_input.load_split(
        FLAGS.dataset, source, 'test' if split == 'test' else 'train', pattern=pattern, seed=FLAGS.seed
    )
    return images, labels, source


def measure_input(hps):
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
    images, labels, source = _load('train')
    resnet = resnet_model.ResNet(hps, sync_batch_norm=FLAGS.sync_batch_norm)
    train_step = resnet.build_train_op(strategy, resnet_main.use_xla(strategy))
    batches = iter(resnet_main.distributed_train_dataset(strategy, images, labels, hps, FLAGS.seed, 0))
    for _ in range(FLAGS.warmup):
        float(train_step(*next(batches))['cost'])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        metrics = train_step(*next(batches))
    float(metrics['cost'])  # waits for the last step
    train_rate = _rate(FLAGS.steps * hps.batch_size, time.perf_counter() - start)

    eval_images, eval_labels, _ = _load('test')
    eval_pass = resnet_main.EvalPass(resnet, eval_images, eval_labels, FLAGS.eval_batch_size, strategy)
    eval_pass()
    # As many images as training saw, at least one whole pass: one small pass is too short to time.
    start, count = time.perf_counter(), 0
    while count < FLAGS.steps * hps.batch_size:
        count += eval_pass()[0]['num_examples']
    return {
        'train_images_per_sec': train_rate,
        'eval_images_per_sec': _rate(count, time.perf_counter() - start),
        'train_data': source,
    }


def main(argv):
    del argv
    resnet_main.configure_tensorflow()
    strategy = resnet_main.make_strategy()
    hps = resnet_model.load_preset(FLAGS.hparams)
    overrides = resnet_model.parse_overrides(FLAGS.hparams_override)
    overrides['num_classes'] = cifar_input.DATASETS[FLAGS.dataset].num_classes
    hps = resnet_model.make_hparams({**hps._asdict(), **overrides}, source='--hparams_override')
    result = {
        'hparams': FLAGS.hparams,
        'batch_size': hps.batch_size,
        'eval_batch_size': FLAGS.eval_batch_size,
        'dtype': FLAGS.dtype,
        'jit_compile': resnet_main.use_xla(strategy),
        'TF_ENABLE_ONEDNN_OPTS': os.environ.get('TF_ENABLE_ONEDNN_OPTS'),  # unset: TensorFlow's own choice
        'replicas': strategy.num_replicas_in_sync,
    }
    result.update(measure_train_and_eval(hps, strategy))
    result.update(measure_input(hps))
    result['peak_memory_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.update({'steps': FLAGS.steps, 'tensorflow': tf.__version__, 'cpus': os.cpu_count()})
    if FLAGS.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f'{key:24} {value}')


if __name__ == '__main__':
    app.run(main)
