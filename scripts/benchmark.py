"""Measures training, eval and input speed, the training loop's overhead and peak memory, as a
training run sees them.

    python scripts/benchmark.py --hparams=resnet32 [--data_source=synthetic|binary --data_dir=DIR] \
        [--steps=N] [--loop_steps=N] [--json]

Training runs the trainer's own input pipeline and compiled step (resnet_main.py's defaults, no
special flags); each rate is timed after warm-up. The input is timed on its own, with full
training augmentation, for each input path: the tf.data pipeline on the host's cores
(`input_images_per_sec`) and the batches made on the device (`device_input_images_per_sec`), on
the real files when --data_dir is given (or the shared CIFAR-10 subset is beside the checkout),
else on synthetic images, repeated to CIFAR's 50,000 training images.

The loop's overhead: the trainer (training.train, as a run calls it, its progress lines and
stop checks included) against a bare tf.function loop of one step per call over the same batches,
on a network small enough that the overhead shows (LOOP_NETWORK), in steps per second. The
trainer's rate is the images/sec of its last progress line, which counts training time only.

The report also gives the network's multiply-adds per image (its convolutions and dense layers,
one forward pass) and describes the machine (machine.describe_machine): the CPU model, its AVX2,
AVX-512, AVX512_BF16, AVX512_FP16 and AMX flags, the instruction set oneDNN reports it dispatches to (one small
convolution in a child process with ONEDNN_VERBOSE=1), TensorFlow's thread settings and the GPUs,
so that rates from different machines are not compared as if they were one.

TensorFlow starts as a run's does, with startup.setup() once the flags are read: the modules that
import it are imported after that, where they are used.
"""

import json
import os
import resource
import tempfile
import time

from absl import flags

from resnet_cifar import choices, datasets, errors, presets, run_config, startup

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
flags.DEFINE_integer(
    'loop_steps', 200, "Timed steps of the loop's overhead, trainer and bare loop each.", lower_bound=1
)
flags.DEFINE_enum('input', 'auto', list(choices.INPUT_PATHS), "As resnet_main.py --input, for the loop's overhead.")
flags.DEFINE_integer(
    'steps_per_call', 10, "As resnet_main.py --steps_per_call, for the loop's overhead.", lower_bound=1
)
flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
FLAGS = flags.FLAGS
CIFAR_TRAINING_IMAGES = 50000
# The loop's overhead is timed on the 2016 ResNet-8 at a quarter of its widths and batch 32: small enough
# that a loop's per-step cost shows against the step's own.
LOOP_NETWORK = {'num_residual_units': 1, 'filters': [4, 4, 8, 16], 'batch_size': 32}


def _rate(count, seconds):
    return round(count / seconds, 1)


def _load(split):
    import cifar_input

    data_dir = datasets.data_dir_or_shared(FLAGS.data_dir)
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


def _cifar_sized(images, labels):
    """The split repeated (and cut) to CIFAR's 50,000 training images: the device holds and
    gathers from as many as a real run's."""
    import tensorflow as tf

    repeats = -(-CIFAR_TRAINING_IMAGES // int(labels.shape[0]))
    return tf.tile(images, [repeats, 1, 1, 1])[:CIFAR_TRAINING_IMAGES], tf.tile(labels, [repeats])[
        :CIFAR_TRAINING_IMAGES
    ]


def measure_input(hps):
    """Images per second through each input path alone, with hps' augmentation."""
    import tensorflow as tf

    import cifar_input
    from resnet_cifar import device_input

    images, labels, source = _load('input')
    images, labels = _cifar_sized(images, labels)
    augmentation = dict(cutout=hps.cutout, translate=hps.translate, reflect_pad=hps.reflect_pad)
    dataset = cifar_input.train_dataset(
        images, labels, hps.batch_size, seed=FLAGS.seed, alternating_flip=hps.alternating_flip, **augmentation
    )
    batches = iter(dataset)
    for _ in range(FLAGS.warmup):
        next(batches)
    count = FLAGS.steps * 10
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    tf_data_rate = _rate(count * hps.batch_size, time.perf_counter() - start)

    made = device_input.DeviceInput(tf.distribute.get_strategy(), images, labels, hps, FLAGS.seed)

    @tf.function
    def batches_on_device(first, count):
        """`count` batches in one call; each is made whole (the augmentation is one XLA call)."""
        checksum = tf.constant(0.0)
        for step in tf.range(first, first + count):
            batch_images, _ = made.batch(step)
            checksum += batch_images[0, 0, 0, 0]
        return checksum

    float(batches_on_device(tf.constant(0, tf.int64), tf.constant(FLAGS.warmup, tf.int64)))
    start = time.perf_counter()
    float(batches_on_device(tf.constant(FLAGS.warmup, tf.int64), tf.constant(count, tf.int64)))
    return {
        'input_images_per_sec': tf_data_rate,
        'device_input_images_per_sec': _rate(count * hps.batch_size, time.perf_counter() - start),
        'input_data': source,
        'input_examples': CIFAR_TRAINING_IMAGES,
    }


def measure_loop_overhead(strategy):
    """Steps per second of the trainer and of a bare loop of one tf.function call per step, over
    the same batches (--input), on LOOP_NETWORK."""
    import keras
    import tensorflow as tf

    import cifar_input
    import resnet_model
    from resnet_cifar import training

    data_dir = datasets.data_dir_or_shared(FLAGS.data_dir)
    if FLAGS.data_source == 'binary':
        data = run_config.data_settings(FLAGS.dataset, data_dir, seed=FLAGS.seed)
    else:
        data = run_config.DataSettings(data_source='synthetic', seed=FLAGS.seed)
    steps = FLAGS.loop_steps
    overrides = {**LOOP_NETWORK, 'train_steps': 2 * steps}
    with tempfile.TemporaryDirectory() as log_root:
        config = run_config.new_run(
            log_root,
            overrides=overrides,
            dataset=FLAGS.dataset,
            data=data,
            summary_every_steps=steps,
            checkpoint_every_steps=2 * steps,
            input=FLAGS.input,
            steps_per_call=FLAGS.steps_per_call,
        )
        training.train(config, strategy)  # the second progress line's rate: steps `steps` to 2 * `steps`
        trainer_rate = _last_images_per_sec(config.train_folder) / LOOP_NETWORK['batch_size']

    keras.utils.set_random_seed(FLAGS.seed)
    train_op = resnet_model.ResNet(config.hparams).build_train_op(strategy)
    images, labels = cifar_input.load_run_split(config, 'train')
    next_batch = training.training_batches(config, strategy, images, labels, 0)

    @tf.function
    def one_step():
        return train_op.train_step(*next_batch(train_op.state.step.read_value()))

    for _ in range(steps):  # as the trainer, timed from the second `steps` on
        metrics = one_step()
    float(metrics['cost'])
    start = time.perf_counter()
    for _ in range(steps):
        metrics = one_step()
    float(metrics['cost'])
    bare_rate = steps / (time.perf_counter() - start)
    return {
        'loop_trainer_steps_per_sec': round(trainer_rate, 1),
        'loop_bare_steps_per_sec': round(bare_rate, 1),
        'loop_trainer_share': round(trainer_rate / bare_rate, 3),
        'loop_network': LOOP_NETWORK,
        'loop_input': FLAGS.input,
        'loop_steps_per_call': FLAGS.steps_per_call,
    }


def _last_images_per_sec(train_dir):
    """The images/sec summary of the last progress line in `train_dir`'s event files."""
    import tensorflow as tf

    values = []
    for name in sorted(os.listdir(train_dir)):
        for record in tf.data.TFRecordDataset(os.path.join(train_dir, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            values += [
                (event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == 'images/sec'
            ]
    return max(values)[1]


def multiply_adds(model):
    """Multiply-adds of one forward pass of one image through `model`'s convolutions and dense
    layers (the rest, batch norm, activations and pooling, is a few percent of them)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += height * width * channels_out * kernel_h * kernel_w * channels_in
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)


def measure_train_and_eval(hps, strategy):
    import resnet_model
    from resnet_cifar import devices, evaluation, training

    images, labels, source = _load('train')
    resnet = resnet_model.ResNet(hps)
    devices.refuse_xla_across_replicas(FLAGS.jit_compile, strategy)
    train_op = resnet.build_train_op(strategy, FLAGS.jit_compile)
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
    hps = presets.build_hparams(FLAGS.hparams, FLAGS.hparams_override, FLAGS.dataset)  # before TensorFlow
    dtype = startup.setup(dtype=FLAGS.dtype, name=lambda key: f'--{key}', command=True)
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
    import resnet_model

    result['multiply_adds_per_image'] = multiply_adds(resnet_model.network(hps))
    result.update(measure_train_and_eval(hps, strategy))
    # Training's and eval's: the input measurements below hold CIFAR's 50,000 images twice more.
    result['peak_memory_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.update(measure_input(hps))
    result.update(measure_loop_overhead(strategy))
    result.update({'steps': FLAGS.steps, 'tensorflow': tf.__version__})
    if FLAGS.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f'{key:24} {value}')


if __name__ == '__main__':
    errors.run_program(main, FLAGS)
