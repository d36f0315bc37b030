"""device_input: batches made on the device are cifar_input.train_dataset's distribution (the same
records in the same order, padded crops, flips, alternating flips, cutout, standardization), a pure
function of (seed, step); auto chooses it only where the split fits on an accelerator."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_hparams

import cifar_input
from resnet_cifar import device_input


def _split(count, seed=0):
    """`count` random images, each labelled with its own record number."""
    images = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return tf.constant(images), tf.range(count, dtype=tf.int32)


def _batches(images, labels, hps, steps, seed=0):
    batches = device_input.DeviceInput(tf.distribute.get_strategy(), images, labels, hps, seed)
    return [[t.numpy() for t in batches.batch(tf.constant(step, tf.int64))] for step in steps]


def _standardized(image):
    """cifar_input.standardize in NumPy."""
    image = image.astype(np.float64)
    return (image - image.mean()) / max(image.std(), 1 / np.sqrt(image.size))


def _windows(image, translate, reflect):
    """Every translation and mirror of `image` cifar_input.augment can make, standardized:
    {(rows, columns, mirrored): image}."""
    padded = np.pad(
        np.asarray(image), [[translate, translate]] * 2 + [[0, 0]], mode='reflect' if reflect else 'constant'
    )
    windows = {}
    for dy in range(2 * translate + 1):
        for dx in range(2 * translate + 1):
            window = padded[dy : dy + 32, dx : dx + 32]
            for mirrored in (False, True):
                windows[dy - translate, dx - translate, mirrored] = _standardized(
                    window[:, ::-1] if mirrored else window
                )
    return windows


def _identify(batch_images, records, images, translate, reflect):
    """For each image of a batch, the one (rows, columns, mirrored) window of its record it is."""
    found = []
    for image, record in zip(batch_images, records, strict=True):
        windows = _windows(images[record], translate, reflect)
        matches = [key for key, window in windows.items() if np.allclose(image, window, atol=1e-4)]
        assert matches, f'record {record}: not a standardized translation of it'
        found.append(matches[0])
    return found


@pytest.mark.parametrize('reflect', [False, True], ids=['zero padding', 'reflect padding'])
def test_batches_are_the_same_records_translated_and_mirrored_as_tf_data_can(reflect):
    """The records, in order, are tf.data's; each image is one of augment's windows of its record;
    over four batches of 64 every translation of 2 pixels and both mirrorings turn up."""
    images, labels = _split(80)
    hps = tiny_hparams(batch_size=64, translate=2, reflect_pad=reflect)
    device = _batches(images, labels, hps, range(4))
    expected = cifar_input.train_dataset(images, labels, 64, translate=2, reflect_pad=reflect)
    for (_, device_labels), (_, tf_data_labels) in zip(device, expected.take(4), strict=True):
        np.testing.assert_array_equal(device_labels, tf_data_labels.numpy())  # epochs 0, 0 and 1, 1, 1 and 2, 2 and 3
    seen = set()
    for batch_images, records in device:
        seen.update(_identify(batch_images, records, images, 2, reflect))
    assert {key[:2] for key in seen} == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert {key[2] for key in seen} == {False, True}


def test_flips_translations_and_cutout_have_tf_datas_frequencies():
    """Over 1,024 images: half mirrored, each of the 9 translations a ninth, each cutout a 6x6
    square at a corner that is uniform over the 27 x 27 places (binomial bounds of 4.5 sigma)."""
    images, labels = _split(1024, seed=1)
    hps = tiny_hparams(batch_size=1024, translate=1, cutout=6)
    plain = tiny_hparams(batch_size=1024, translate=1)
    (cut, records), (whole, same_records) = (
        _batches(images, labels, hps, [3])[0],
        _batches(images, labels, plain, [3])[0],
    )
    np.testing.assert_array_equal(records, same_records)

    changed = (cut != whole).any(axis=3)
    corners = []
    for i in range(1024):
        rows, columns = np.nonzero(changed[i])
        assert (cut[i][changed[i]] == 0).all()
        assert rows.max() - rows.min() <= 5 and columns.max() - columns.min() <= 5  # within one 6x6 square
        corners.append((rows.min(), columns.min()))
    corner_rows = np.array([row for row, _ in corners])
    assert abs(np.mean(corner_rows) - 13) < 4.5 * np.sqrt((27**2 - 1) / 12 / 1024)  # uniform over 0..26

    found = _identify(whole[:288], records[:288], images.numpy(), 1, False)
    mirrored = sum(key[2] for key in found)
    assert abs(mirrored - 144) < 4.5 * np.sqrt(288 / 4)
    for offset in {key[:2] for key in found} | {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}:
        count = sum(key[:2] == offset for key in found)
        assert abs(count - 32) < 4.5 * np.sqrt(288 * (1 / 9) * (8 / 9)), (offset, count)


def test_alternating_flip_shows_each_record_the_other_way_round_in_the_next_epoch():
    images, labels = _split(16, seed=2)
    hps = tiny_hparams(batch_size=8, translate=0, alternating_flip=True)
    batches = _batches(images, labels, hps, range(6))  # three epochs of two batches
    shown = {}
    for step, (batch_images, records) in enumerate(batches):
        for image, record in zip(batch_images, records, strict=True):
            shown[step // 2, record] = image
    for record in range(16):
        np.testing.assert_allclose(shown[1, record], shown[0, record][:, ::-1], atol=1e-5)
        np.testing.assert_allclose(shown[2, record], shown[0, record], atol=1e-5)
    first_epoch = [not np.allclose(shown[0, r], _standardized(images[r].numpy()), atol=1e-4) for r in range(16)]
    assert 0 < sum(first_epoch) < 16, 'a coin per record decides the first epoch'


def test_a_batch_is_a_function_of_seed_and_step_alone():
    images, labels = _split(40, seed=3)
    hps = tiny_hparams(batch_size=16, translate=4, cutout=8)
    again = _batches(images, labels, hps, [5, 2])
    first = _batches(images, labels, hps, [2, 5])
    np.testing.assert_array_equal(first[0][0], again[1][0])
    np.testing.assert_array_equal(first[1][0], again[0][0])
    other_seed = _batches(images, labels, hps, [2], seed=1)
    assert not np.array_equal(other_seed[0][0], first[0][0])


def test_standardize_is_cifar_inputs_within_float_rounding():
    images, _ = _split(64, seed=4)
    flat = tf.concat([images[:2] * 0 + 7, images[2:]], axis=0)  # two flat images: the deviation floor
    np.testing.assert_allclose(
        device_input.standardize(flat).numpy(), cifar_input.standardize(flat).numpy(), rtol=1e-5, atol=2e-5
    )


def test_auto_chooses_the_device_where_the_split_fits_in_its_share_of_an_accelerator():
    cifar = 50000 * 32 * 32 * 3
    assert device_input.choose('auto', cifar, None) == 'tf_data'  # a CPU: the 2016 recipe's path
    assert device_input.choose('auto', cifar, 16 * 2**30) == 'device'
    assert device_input.choose('auto', cifar, int(cifar / device_input.DEVICE_SHARE) - 1) == 'tf_data'
    assert device_input.choose('device', cifar, None) == 'device'
    assert device_input.choose('tf_data', cifar, 80 * 2**30) == 'tf_data'
    assert device_input.device_memory(tf.distribute.get_strategy()) is None  # no GPU on this machine
