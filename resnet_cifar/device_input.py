"""Training batches made on the device: the training split held as one uint8 tensor on each
replica's device, each step's batch gathered and augmented there with batched ops, so that an
accelerator never waits for the host's cores (`--input=device`).

    batches = device_input.DeviceInput(strategy, images, labels, hps, seed)
    images, labels = batches.batch(step)  # per replica: its share of global batch `step`

It is cifar_input.train_dataset's distribution, drawn otherwise. The same records in the same
order (example position p is record index_shuffle(p mod N) of epoch p div N); the same padded
crop, flip (random, or airbench's alternating), per-image standardization and cutout, each as
likely; but the random numbers are drawn for the whole global batch from one seed per step,
where tf.data draws them example by example. So a batch is a pure function of (seed, step), and
the same on any number of replicas (each takes its slice), but not the tf.data path's batch:
each path resumes exactly on itself only.
"""

import tensorflow as tf

from resnet_cifar.datasets import DEPTH, IMAGE_SIZE
from resnet_cifar.errors import UserError

DEVICE_SHARE = 0.1  # auto holds the split on the device when it takes at most this share of its memory
SHUFFLE_SEED_PAD = 498247692  # what tf.random.experimental.index_shuffle puts before a [2] seed
DRAWS = {'translate': 0, 'flip': 1, 'cutout': 2}  # each draw's own seed, folded from (seed, step)


def device_memory(strategy):
    """The memory in bytes of the smallest GPU the replicas may run on, or None on a CPU, and where
    TensorFlow does not say (TPUs)."""
    if isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.get_visible_devices('GPU'):
        return None
    from tensorflow.python.client import device_lib  # the one place TensorFlow gives a GPU's memory

    gpus = [device for device in device_lib.list_local_devices() if device.device_type == 'GPU']
    return min(int(gpu.memory_limit) for gpu in gpus) if gpus else None


def choose(input_path, split_bytes, memory):
    """'tf_data' or 'device' for --input (INPUT_PATHS): `auto` is device when the split
    (`split_bytes`) takes at most DEVICE_SHARE of an accelerator's `memory` (None: a CPU, or
    unknown), else tf_data."""
    if input_path != 'auto':
        return input_path
    return 'device' if memory is not None and split_bytes <= DEVICE_SHARE * memory else 'tf_data'


def _replica_devices(strategy):
    """The devices of this worker's replicas; [None] for the default strategy: where TensorFlow places ops."""
    try:
        return strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has none of its own
        return [None]


class DeviceInput:
    """The split on each replica's device and the batches made there; see the module's docstring."""

    def __init__(self, strategy, images, labels, hps, seed):
        if isinstance(strategy, tf.distribute.TPUStrategy):
            raise UserError('device input runs on GPUs and CPUs; on TPUs use --input=tf_data', 'input')
        self.strategy, self.hps = strategy, hps
        self.num_examples = int(labels.shape[0])
        self.seed = tf.constant(seed, tf.int64)
        coin_seed = tf.random.experimental.stateless_fold_in(tf.stack([self.seed, 0]), 3)
        coins = tf.random.stateless_uniform([self.num_examples], coin_seed) < 0.5  # alternating_flip's epoch 0
        self._augment_compiled = tf.function(self._augment, jit_compile=True)
        self.local = [self._place(device, images, labels, coins) for device in _replica_devices(strategy)]

    @staticmethod
    def _place(device, images, labels, coins):
        """Copies of the split on `device` (None: TensorFlow's choice): its images as rows of pixels
        [N * 32, 32 * 3], labels and alternating_flip's coins. Tensors, not variables: a compiled
        call reads them where they are, and nothing saves them."""
        with tf.device(device):
            return tuple(tf.identity(t) for t in (tf.reshape(images, [-1, IMAGE_SIZE * DEPTH]), labels, coins))

    def batch(self, step):
        """Global batch `step` (an int64 tensor), each replica its share: (images, labels) as
        strategy.run gives them, for the training step."""
        return self.strategy.run(self.replica_batch, args=(step,))

    def replica_batch(self, step):
        """This replica's slice of global batch `step`: standardized float32 images [b, 32, 32, 3], labels [b]."""
        hps, context = self.hps, tf.distribute.get_replica_context()
        replica = tf.get_static_value(context.replica_id_in_sync_group)
        pixel_rows, labels, coins = self.local[replica % len(self.local)]
        size = hps.batch_size // context.num_replicas_in_sync
        mine = slice(replica * size, (replica + 1) * size)
        offsets, flips, corners = (draw[mine] for draw in self._draws(step))
        positions = step * hps.batch_size + mine.start + tf.range(size, dtype=tf.int64)
        epochs, records = positions // self.num_examples, self._shuffled(positions)
        mirror = tf.math.logical_xor(tf.gather(coins, records), epochs % 2 == 1) if hps.alternating_flip else flips
        return self._augment_compiled(pixel_rows, records, offsets, mirror, corners), tf.gather(labels, records)

    def _draws(self, step):
        """The global batch's random numbers, from (seed, step) alone: translations [B, 2] (rows,
        columns), coin flips [B] and cutout corners [B, 2]."""
        hps, size = self.hps, self.hps.batch_size

        def seed(name):
            return tf.random.experimental.stateless_fold_in(tf.stack([self.seed, step]), DRAWS[name])

        offsets = tf.random.stateless_uniform([size, 2], seed('translate'), -hps.translate, hps.translate + 1, tf.int32)
        flips = tf.random.stateless_uniform([size], seed('flip')) < 0.5
        corners = tf.random.stateless_uniform([size, 2], seed('cutout'), 0, IMAGE_SIZE - hps.cutout + 1, tf.int32)
        return offsets, flips, corners

    def _shuffled(self, positions):
        """The record at each position: index_shuffle of its epoch, as cifar_input.train_dataset
        (index_shuffle's batched form, with the seed it would make of [seed, epoch])."""
        epochs = positions // self.num_examples
        seeds = tf.stack(
            [
                tf.fill(tf.shape(epochs), tf.constant(SHUFFLE_SEED_PAD, tf.int64)),
                tf.fill(tf.shape(epochs), self.seed),
                epochs,
            ],
            axis=1,
        )
        return tf.raw_ops.RandomIndexShuffle(
            index=positions % self.num_examples,
            seed=seeds,
            max_index=tf.constant(self.num_examples - 1, tf.int64),
            rounds=4,
        )

    def _augment(self, pixel_rows, records, offsets, mirror, corners):
        """The images of `records`, translated by `offsets` (rows, columns) and mirrored where
        `mirror` (cifar_input.augment's padded crop, read straight from the unpadded rows),
        standardized, then cut out at `corners`. XLA compiles it into a few passes over the pixels."""
        steps, last = tf.range(IMAGE_SIZE), IMAGE_SIZE - 1
        rows = offsets[:, :1] + steps
        columns = offsets[:, 1:] + tf.where(mirror[:, tf.newaxis], last - steps, steps)
        inside = ((rows >= 0) & (rows <= last))[:, :, tf.newaxis] & ((columns >= 0) & (columns <= last))[:, tf.newaxis]
        if self.hps.reflect_pad:  # -1 reads row 1, 32 reads row 30: tf.pad's REFLECT
            rows, columns = (last - tf.abs(last - tf.abs(index)) for index in (rows, columns))
        else:
            rows, columns = (tf.clip_by_value(index, 0, last) for index in (rows, columns))
        images = tf.gather(pixel_rows, tf.cast(records, tf.int32)[:, tf.newaxis] * IMAGE_SIZE + rows)
        images = tf.reshape(images, [-1, IMAGE_SIZE, IMAGE_SIZE, DEPTH])
        images = tf.gather(images, columns, axis=2, batch_dims=1)
        if not self.hps.reflect_pad:  # zero padding
            images = tf.where(inside[..., tf.newaxis], images, tf.zeros_like(images))
        images = standardize(images)
        if self.hps.cutout:
            images = self._cut_out(images, corners)
        return images

    def _cut_out(self, images, corners):
        """cifar_input.cut_out for a batch: a cutout x cutout square zeroed at each image's corner."""
        steps = tf.range(IMAGE_SIZE)
        rows = (steps >= corners[:, :1]) & (steps < corners[:, :1] + self.hps.cutout)
        columns = (steps >= corners[:, 1:]) & (steps < corners[:, 1:] + self.hps.cutout)
        square = rows[:, :, tf.newaxis, tf.newaxis] & columns[:, tf.newaxis, :, tf.newaxis]
        return tf.where(square, tf.zeros_like(images), images)


def standardize(images):
    """cifar_input.standardize of uint8 images [b, 32, 32, 3], within float rounding: each image's
    mean and variance from integer sums of its pixels and their squares, which XLA computes in one
    pass over the bytes, where the float version takes three over floats four times their size."""
    pixels = tf.cast(images, tf.int32)
    count = float(IMAGE_SIZE * IMAGE_SIZE * DEPTH)
    mean = tf.cast(tf.reduce_sum(pixels, [1, 2, 3], keepdims=True), tf.float32) / count
    squares = tf.cast(tf.reduce_sum(pixels * pixels, [1, 2, 3], keepdims=True), tf.float32) / count
    deviation = tf.sqrt(tf.maximum(squares - mean * mean, 0.0))
    return (tf.cast(images, tf.float32) - mean) / tf.maximum(deviation, 1.0 / count**0.5)
