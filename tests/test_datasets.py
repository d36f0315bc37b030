"""datasets: where a dataset's files are, from the folder the user names, before TensorFlow starts."""

import pytest
from conftest import as_flags, write_records

from resnet_cifar import datasets


def test_data_dir_may_be_the_archive_parent(tmp_path):
    nested = tmp_path / 'cifar-10-batches-bin'
    nested.mkdir()
    train, test = datasets.data_patterns('cifar10', str(tmp_path))
    assert train == str(nested / 'data_batch_*.bin') and test == str(nested / 'test_batch.bin')


def test_a_folder_of_another_dataset_names_the_dataset_it_looks_like(tmp_path):
    write_records(tmp_path / 'data_batch_1.bin', [1, 2])
    write_records(tmp_path / 'test_batch.bin', [3])
    with pytest.raises(datasets.DataError) as error:
        datasets.data_patterns('cifar100', str(tmp_path))
    line = as_flags(error.value)
    assert line.startswith(f'--data_dir: {tmp_path} has no cifar100 files'), line
    assert line.endswith('it looks like cifar10 (data_batch_*.bin, test_batch.bin): pass --dataset=cifar10'), line
    assert datasets.data_patterns('cifar10', str(tmp_path))[0] == str(tmp_path / 'data_batch_*.bin')


def test_the_archive_folder_of_another_dataset_is_named_too(tmp_path):
    (tmp_path / 'cifar-100-binary').mkdir()
    with pytest.raises(datasets.DataError, match='looks like cifar100 .*dataset=cifar100'):
        datasets.data_patterns('cifar10', str(tmp_path))


def test_an_empty_folder_is_left_to_the_file_check(tmp_path):
    """No files of either dataset: nothing to suggest; reading the files says what is missing."""
    assert datasets.data_patterns('cifar100', str(tmp_path)) == (
        str(tmp_path / 'train.bin'),
        str(tmp_path / 'test.bin'),
    )
