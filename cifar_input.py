"""CIFAR-10/100 input: the binary batch files, tensorflow-datasets, or synthetic images, via tf.data.

Every source yields the same thing, all examples of a split as uint8 images [N, 32, 32, 3] and
int32 labels [N], which `train_dataset` and `eval_dataset` turn into batches. CIFAR is small (150 MB for 50k
images), so holding a split in memory is cheap, and it lets the training order be a pure
function of (seed, step): a resumed run reads exactly what an uninterrupted one would.
"""

import glob
import os
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image

from resnet_cifar.datasets import (
    DATASETS,
    DEPTH,
    IMAGE_SIZE,
    DataError,
    record_bytes,
)
from resnet_cifar.errors import reason

PAD = 4  # training images are padded to 40x40, then randomly cropped back to 32x32
SPLITS = ('train', 'validation', 'test')
SYNTHETIC_SIZES = {'train': 4096, 'validation': 512, 'test': 1024}
MAX_PIXELS = 50_000_000  # an image to predict on, decoded: 150 MB; a photo of 48 megapixels fits


def _check_file(path, dataset):
    """Refuses empty files and files that are not whole records of this dataset."""
    size = os.path.getsize(path)
    expected = record_bytes(dataset)
    if size == 0:
        raise DataError(f'{path}: the file is empty; expected {dataset} records of {expected} bytes')
    if size % expected:
        hint = ''
        for other in DATASETS:
            other_bytes = record_bytes(other)
            if other != dataset and size % other_bytes == 0:
                hint = f'; it looks like {other} ({other_bytes}-byte records): pass dataset={other}'
        raise DataError(
            f'{path}: {size} bytes is not a whole number of {expected}-byte {dataset} records{hint}',
            mentions=['dataset'],
        )
    return size // expected


def list_files(pattern, dataset, key=None):
    """The sorted files matching pattern, each checked; `key` names the setting the pattern came from."""
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files:
        raise DataError(f'no file matches {pattern}', key)
    for path in files:
        _check_file(path, dataset)
    return files


def read_records(files, dataset):
    """All records of the files, in order, as (uint8 images [N, 32, 32, 3], int32 labels [N]). Each
    file is decoded whole, as one [records, bytes] array: far quicker than a map over single records
    (docs/performance.md)."""
    spec = DATASETS[dataset]
    images, labels = [], []
    for path in files:
        _check_file(path, dataset)
        records = tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), [-1, record_bytes(dataset)])
        file_labels = tf.cast(records[:, spec.label_offset], tf.int32)
        depth_major = tf.reshape(records[:, spec.label_offset + 1 :], [-1, DEPTH, IMAGE_SIZE, IMAGE_SIZE])
        file_images = tf.transpose(depth_major, [0, 2, 3, 1])
        bad = np.flatnonzero(file_labels.numpy() >= spec.num_classes)
        if bad.size:
            raise DataError(
                f'{path}: record {bad[0]} has label {file_labels.numpy()[bad[0]]}, '
                f'but {dataset} labels are 0..{spec.num_classes - 1}'
            )
        images.append(file_images)
        labels.append(file_labels)
    return tf.concat(images, 0), tf.concat(labels, 0)


def _hold_out(images, labels, split, validation_size, source):
    """Splits training examples: the last validation_size are the validation split."""
    total = int(labels.shape[0])
    if validation_size >= total:
        raise DataError(
            f'{validation_size} must be less than the {total} training images in {source}', 'validation_size'
        )
    keep = total - validation_size
    if split == 'train':
        return images[:keep], labels[:keep]
    if validation_size == 0:
        raise _no_validation_split()
    return images[keep:], labels[keep:]


def _no_validation_split():
    return DataError('the validation split needs validation_size > 0 when training', 'eval_split', ['validation_size'])


def _load_tfds(dataset, split, validation_size, data_dir):
    import tensorflow_datasets as tfds

    name = DATASETS[dataset].tfds_name
    if split == 'test':
        tfds_split = 'test'
    elif validation_size == 0:
        if split == 'validation':
            raise _no_validation_split()
        tfds_split = 'train'
    else:
        tfds_split = f'train[:-{validation_size}]' if split == 'train' else f'train[-{validation_size}:]'
    try:
        examples = tfds.load(name, split=tfds_split, data_dir=data_dir, as_supervised=True)
    except Exception as e:  # tfds raises many kinds (download, missing files); the user needs one line.
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f'tfds cannot load {name} split {tfds_split}: {first_line}', 'data_source') from None
    images, labels = examples.batch(1 << 30).get_single_element()
    return tf.cast(images, tf.uint8), tf.cast(labels, tf.int32)


def _synthetic(dataset, split, seed):
    """Random images and labels for smoke runs and benchmarks: no files needed."""
    size = SYNTHETIC_SIZES[split]
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    images = rng.integers(0, 256, (size, IMAGE_SIZE, IMAGE_SIZE, DEPTH), dtype=np.uint8)
    labels = rng.integers(0, DATASETS[dataset].num_classes, size, dtype=np.int32)
    return tf.constant(images), tf.constant(labels)


def load_split(dataset, data_source, split, pattern=None, validation_size=0, tfds_data_dir=None, seed=0):
    """All examples of one split as (uint8 images [N, 32, 32, 3], int32 labels [N]).

    For binary data, `pattern` matches the training files (train_data_path) for the train and
    validation splits and the test files (eval_data_path) for the test split.
    """
    if split not in SPLITS:
        raise DataError(f'split: expected one of {", ".join(SPLITS)}, got {split!r}')
    if data_source == 'synthetic':
        return _synthetic(dataset, split, seed)
    if data_source == 'tfds':
        return _load_tfds(dataset, split, validation_size, tfds_data_dir)
    if data_source != 'binary':
        raise DataError(f'expected binary, tfds or synthetic, got {data_source!r}', 'data_source')
    key = 'eval_data_path' if split == 'test' else 'train_data_path'
    if not pattern:
        raise DataError('no data given; pass data_dir (or train_data_path and eval_data_path)', key, ['data_dir'])
    images, labels = read_records(list_files(pattern, dataset, key), dataset)
    if split == 'test':
        return images, labels
    return _hold_out(images, labels, split, validation_size, pattern)


def resize(images):
    """uint8 images [..., H, W, 3] as [..., 32, 32, 3], unchanged when already 32x32: bilinear and
    antialiased (each pixel a weighted mean of the area it covers), rounded. PIL's
    Image.resize((32, 32), Image.BILINEAR) gives the same pixels, within one level."""
    if images.shape[-3:-1] == (IMAGE_SIZE, IMAGE_SIZE):
        return images
    resized = tf.image.resize(images, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decode_image(contents):
    """The uint8 RGB pixels [H, W, 3] of an encoded PNG, JPEG, GIF or BMP image. JPEG with the
    accurate integer DCT, as PIL and libjpeg decode it by default: TensorFlow's own default, the
    fast DCT, gives pixels a few levels off theirs."""
    if tf.io.is_jpeg(contents):
        return tf.io.decode_jpeg(contents, channels=DEPTH, dct_method='INTEGER_ACCURATE')
    return tf.io.decode_image(contents, channels=DEPTH, expand_animations=False)


def _expand(paths):
    """The paths, each glob pattern among them ("imgs/*.png", quoted on a shell) replaced by its matches."""
    expanded = []
    for path in paths:
        if glob.has_magic(path) and not os.path.exists(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise DataError(f'no file matches {path}', 'images')
            expanded += matches
        else:
            expanded.append(path)
    return expanded


def _check_pixels(path):
    """Refuses an image larger than MAX_PIXELS from its header (PIL reads only that), before it is
    decoded: a small file can hold an image of gigabytes. A file PIL cannot identify is left to
    decode_image, which says why it cannot be read."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
            size = f'{width}x{height} pixels' if width * height > MAX_PIXELS else None
        except Image.DecompressionBombError:  # beyond PIL's own limit, far beyond ours
            size = f'more than {2 * Image.MAX_IMAGE_PIXELS // 10**6} megapixels'
        except (OSError, ValueError, SyntaxError):  # not an image PIL knows; SyntaxError: a broken header
            return
    if size:
        raise DataError(
            f'{path}: {size} is more than the {MAX_PIXELS // 10**6} megapixels predict decodes; shrink it first '
            '(it is resized to 32x32 anyway)'
        )


def read_image_files(paths, dataset):
    """Images for prediction as (name, uint8 [32, 32, 3], true label or None) triples.

    PNG, JPEG, GIF and BMP files are decoded to RGB (decode_image) and resized to 32x32 when they
    are another size (resize); a binary batch file (.bin) of `dataset` gives each of its records, with its label.
    """
    examples = []
    for path in _expand(paths):
        if os.path.isdir(path):
            raise DataError(f'{path} is a folder; give its image files or .bin batch files (a pattern: {path}/*.png)')
        if not os.path.isfile(path):
            raise DataError(f'{path}: no such file; expected an image (PNG, JPEG, GIF or BMP) or a .bin batch file')
        if path.endswith('.bin'):
            images, labels = read_records([path], dataset)
            examples += [
                (f'{path}[{i}]', image, int(label)) for i, (image, label) in enumerate(zip(images, labels, strict=True))
            ]
            continue
        _check_pixels(path)
        try:
            image = decode_image(tf.io.read_file(path))
        except (tf.errors.OpError, ValueError) as e:
            raise DataError(
                f'{path}: cannot read the image ({reason(e)}); expected a PNG, JPEG, GIF or BMP file'
            ) from None
        examples.append((path, resize(image), None))
    return examples


def standardize(image):
    """Per-image standardization, as the original: zero mean, unit variance per image."""
    return tf.image.per_image_standardization(image)


def augment(image, seed, pad=PAD, reflect=False, mirror=None):
    """Pad to 40x40 (`pad` on each side), random-crop 32x32, random left-right flip; stateless, so
    `seed` decides all. With `reflect`, the padding reflects the image instead of being zeros; a
    boolean `mirror` flips the image where it is true instead of at random."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT' if reflect else 'CONSTANT')
    image = tf.image.stateless_random_crop(image, [IMAGE_SIZE, IMAGE_SIZE, DEPTH], seed=crop_seed)
    if mirror is not None:
        return tf.where(mirror, tf.image.flip_left_right(image), image)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def alternating_mirror(seed, record, epoch):
    """airbench's alternating flip: whether record `record` is mirrored in `epoch`. A coin per
    record decides epoch 0; every later epoch flips the whole set again: each image is seen both
    ways in every two epochs, where a new coin every epoch shows it the same way twice half the time."""
    coin_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed, tf.cast(record, tf.int64)]), 2)
    coin = tf.random.stateless_uniform([], coin_seed) < 0.5
    return tf.math.logical_xor(coin, epoch % 2 == 1)


def cut_out(image, side, seed):
    """`image` with a side x side square zeroed at a random place inside it (DeVries and Taylor,
    2017). On a standardized image, zero is the image's mean."""
    corner = tf.random.stateless_uniform([2], seed, 0, IMAGE_SIZE - side + 1, dtype=tf.int32)
    pixels = tf.range(IMAGE_SIZE)
    rows = (pixels >= corner[0]) & (pixels < corner[0] + side)
    columns = (pixels >= corner[1]) & (pixels < corner[1] + side)
    square = rows[:, tf.newaxis, tf.newaxis] & columns[tf.newaxis, :, tf.newaxis]
    return tf.where(square, tf.zeros_like(image), image)


def train_dataset(
    images,
    labels,
    batch_size,
    seed=0,
    start_step=0,
    num_shards=1,
    shard=0,
    replica_batch_size=None,
    cutout=0,
    translate=PAD,
    reflect_pad=False,
    alternating_flip=False,
):
    """Endless augmented batches, reshuffled every epoch, starting at global batch `start_step`.

    Example position p of the run is record index_shuffle(p mod N) of epoch p div N, augmented
    with the seed (seed, p), then cut out (`cutout` > 0) with a seed folded from it: the same
    seed and step always give the same global batch, on any number of devices. With several
    input pipelines (hosts), pipeline `shard` of `num_shards` reads its slice of each global
    batch, cut into batches of `replica_batch_size` for its replicas, which tf.distribute hands
    out in order. `translate`, `reflect_pad` and `alternating_flip` are augment's pad, reflect
    and alternating_mirror.
    """
    num_examples = int(labels.shape[0])
    seed = tf.constant(seed, tf.int64)
    shard_size = batch_size // num_shards

    def example(position):
        epoch, index = position // num_examples, position % num_examples
        record = tf.random.experimental.index_shuffle(index, seed=tf.stack([seed, epoch]), max_index=num_examples - 1)
        example_seed = tf.stack([seed, position])
        mirror = alternating_mirror(seed, record, epoch) if alternating_flip else None
        image = tf.gather(images, record)
        image = standardize(augment(image, example_seed, translate, reflect_pad, mirror))
        if cutout:
            image = cut_out(image, cutout, tf.random.experimental.stateless_fold_in(example_seed, 1))
        return image, tf.gather(labels, record)

    def shard_positions(step):
        return step * batch_size + shard * shard_size + tf.range(shard_size, dtype=tf.int64)

    steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max // batch_size)
    return (
        steps.map(shard_positions)
        .unbatch()
        .map(example, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(replica_batch_size or shard_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(images, labels, batch_size):
    """Every example exactly once, in order, standardized; the last batch may be partial."""
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(lambda x, y: (standardize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def load_run_split(config, split):
    """The images and labels of 'train', 'validation' or 'test' that a run configuration
    (run_config.RunConfig) names."""
    data = config.data
    return load_split(
        config.dataset,
        data.data_source,
        split,
        pattern=data.eval_data_path if split == 'test' else data.train_data_path,
        validation_size=data.validation_size,
        tfds_data_dir=data.tfds_data_dir,
        seed=data.seed,
    )
