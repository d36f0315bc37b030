"""cifar_input: the binary records, the splits, and the tf.data pipelines with their augmentation."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_records

import cifar_input
from cifar_input import DataError
from resnet_cifar import datasets


def _random_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_real_subset_counts_and_labels(subset):
    train_pattern, test_pattern = datasets.data_patterns('cifar10', subset)
    train = cifar_input.load_split('cifar10', 'binary', 'train', pattern=train_pattern)
    test = cifar_input.load_split('cifar10', 'binary', 'test', pattern=test_pattern)
    assert train[0].shape == (4068, 32, 32, 3) and train[0].dtype == tf.uint8
    assert test[1].shape == (1017,)
    assert test[1].numpy()[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert set(np.unique(train[1].numpy())) == set(range(10))


def test_eval_dataset_is_standardized_in_order_with_partial_last_batch(subset):
    images, labels = cifar_input.load_split('cifar10', 'binary', 'test', pattern=f'{subset}/test_batch.bin')
    batches = list(cifar_input.eval_dataset(images, labels, 100))
    assert [int(b[1].shape[0]) for b in batches] == [100] * 10 + [17]
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels.numpy())
    standardized = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_allclose(standardized.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # The pixels are the file's own: record 0, standardized, is batch 0's first image.
    expected = tf.image.per_image_standardization(tf.cast(images[0], tf.float32)).numpy()
    np.testing.assert_allclose(standardized[0], expected, atol=1e-5)


def test_train_dataset_epochs_are_permutations_and_resume_exactly():
    labels = tf.range(10, dtype=tf.int32)
    images = tf.constant(_random_images(10))
    dataset = cifar_input.train_dataset(images, labels, batch_size=5, seed=3)
    batches = [b[1].numpy() for b in dataset.take(6)]
    epochs = [np.concatenate(batches[i : i + 2]) for i in (0, 2, 4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:]), 'every epoch is reshuffled'
    resumed = cifar_input.train_dataset(images, labels, batch_size=5, seed=3, start_step=3)
    first_resumed = next(iter(resumed))
    np.testing.assert_array_equal(first_resumed[1].numpy(), batches[3])
    again = list(dataset.take(4))[3]
    np.testing.assert_array_equal(first_resumed[0].numpy(), again[0].numpy())
    other_seed = cifar_input.train_dataset(images, labels, batch_size=5, seed=4)
    assert not np.array_equal(np.concatenate([b[1].numpy() for b in other_seed.take(2)]), epochs[0])


def test_augmentation_is_a_padded_crop_maybe_flipped():
    image = _random_images(1, seed=1)[0]
    padded = np.pad(image, [[4, 4], [4, 4], [0, 0]])
    windows = {}
    for dy in range(9):
        for dx in range(9):
            window = padded[dy : dy + 32, dx : dx + 32]
            windows[dy, dx, False], windows[dy, dx, True] = window, window[:, ::-1]
    seen = set()
    for s in range(40):
        out = cifar_input.augment(tf.constant(image), seed=tf.constant([7, s], tf.int64)).numpy()
        matches = [key for key, window in windows.items() if np.array_equal(out, window)]
        assert matches, f'seed {s}: not a crop of the padded image'
        seen.update(matches)
    assert len({k[2] for k in seen}) == 2 and len({k[:2] for k in seen}) > 10


def test_cutout_zeroes_one_square_of_the_given_side():
    image = tf.random.stateless_uniform([32, 32, 3], [0, 0], 1.0, 2.0)  # no zero of its own
    corners = set()
    for s in range(20):
        out = cifar_input.cut_out(image, 8, tf.constant([3, s], tf.int64)).numpy()
        rows, cols = np.nonzero((out == 0).all(axis=2))
        assert (out == 0).sum() == 8 * 8 * 3
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        np.testing.assert_array_equal(out[out != 0], image.numpy()[out != 0])
        np.testing.assert_array_equal(out, cifar_input.cut_out(image, 8, tf.constant([3, s], tf.int64)).numpy())
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 10


def test_training_batches_with_cutout_are_the_same_batches_with_a_square_zeroed():
    images = tf.random.stateless_uniform([40, 32, 32, 3], [1, 1], 0, 256, dtype=tf.int32)
    images, labels = tf.cast(images, tf.uint8), tf.range(40) % 10
    plain = next(iter(cifar_input.train_dataset(images, labels, 8, seed=2, start_step=3)))[0].numpy()
    cut = next(iter(cifar_input.train_dataset(images, labels, 8, seed=2, start_step=3, cutout=6)))[0].numpy()
    changed = (plain != cut).any(axis=3)
    assert (cut[plain != cut] == 0).all()
    assert [int(changed[i].sum()) for i in range(8)] == [36] * 8


def test_validation_split_holds_out_the_last_training_images(subset):
    pattern = f'{subset}/data_batch_*.bin'
    all_images, all_labels = cifar_input.load_split('cifar10', 'binary', 'train', pattern=pattern)
    train = cifar_input.load_split('cifar10', 'binary', 'train', pattern=pattern, validation_size=68)
    validation = cifar_input.load_split('cifar10', 'binary', 'validation', pattern=pattern, validation_size=68)
    assert train[1].shape == (4000,) and validation[1].shape == (68,)
    np.testing.assert_array_equal(validation[0].numpy(), all_images[-68:].numpy())
    np.testing.assert_array_equal(train[1].numpy(), all_labels[:4000].numpy())
    with pytest.raises(DataError, match='validation_size'):
        cifar_input.load_split('cifar10', 'binary', 'validation', pattern=pattern)


def test_cifar100_records_use_the_fine_label(tmp_path):
    images = _random_images(5)
    fine, coarse = [99, 0, 42, 7, 63], [19, 0, 5, 3, 12]
    write_records(tmp_path / 'train.bin', fine, images, coarse=coarse)
    got_images, got_labels = cifar_input.load_split('cifar100', 'binary', 'train', pattern=str(tmp_path / 'train.bin'))
    assert got_labels.numpy().tolist() == fine
    np.testing.assert_array_equal(got_images.numpy(), images)


def test_missing_empty_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f'train_data_path: no file matches {tmp_path}/data_batch_'):
        cifar_input.list_files(f'{tmp_path}/data_batch_*.bin', 'cifar10', 'train_data_path')
    empty = tmp_path / 'empty.bin'
    empty.write_bytes(b'')
    with pytest.raises(DataError, match=f'{empty}: the file is empty'):
        cifar_input.list_files(str(empty), 'cifar10')
    truncated = tmp_path / 'truncated.bin'
    truncated.write_bytes(b'\0' * (3073 * 2 + 100))
    with pytest.raises(DataError, match=f'{truncated}: 6246 bytes is not a whole number of 3073-byte cifar10'):
        cifar_input.list_files(str(truncated), 'cifar10')


def test_wrong_dataset_record_size_is_explained(tmp_path):
    c100 = tmp_path / 'train.bin'
    write_records(c100, [1, 2, 3], _random_images(3), coarse=[0, 0, 0])
    with pytest.raises(DataError, match='looks like cifar100.*dataset=cifar100'):
        cifar_input.list_files(str(c100), 'cifar10')
    c10 = tmp_path / 'data_batch_1.bin'
    write_records(c10, [1, 2], _random_images(2))
    with pytest.raises(DataError, match='looks like cifar10.*dataset=cifar10'):
        cifar_input.list_files(str(c10), 'cifar100')


def test_label_out_of_range_names_file_and_record(tmp_path):
    path = tmp_path / 'data_batch_1.bin'
    write_records(path, [1, 12, 3], _random_images(3))
    with pytest.raises(DataError, match=f'{path}: record 1 has label 12.*0..9'):
        cifar_input.load_split('cifar10', 'binary', 'train', pattern=str(path))


def test_synthetic_source_needs_no_files():
    images, labels = cifar_input.load_split('cifar100', 'synthetic', 'train')
    assert images.shape[1:] == (32, 32, 3) and images.dtype == tf.uint8
    assert int(tf.reduce_max(labels)) < 100


def test_tfds_source_reads_the_same_layout(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        train = cifar_input.load_split('cifar10', 'tfds', 'train', validation_size=2)
        validation = cifar_input.load_split('cifar10', 'tfds', 'validation', validation_size=2)
    # The mock ignores split slicing; what it checks is the layout every source must give.
    assert train[0].shape[1:] == (32, 32, 3) and train[0].dtype == tf.uint8
    assert validation[1].dtype == tf.int32 and int(tf.reduce_max(validation[1])) < 10


def test_tfds_without_data_gets_as_far_as_the_download(tmp_path, monkeypatch):
    """The tfds path works from requirements.txt up to the download, which this machine cannot make:
    any other failure (a missing module, say) gives another reason and fails the test."""
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise OSError('no network in this test')

    monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract', offline)
    with pytest.raises(DataError) as error:
        cifar_input.load_split('cifar10', 'tfds', 'test', tfds_data_dir=os.fspath(tmp_path / 'none'))
    assert str(error.value) == 'data_source: tfds cannot load cifar10 split test: no network in this test'
