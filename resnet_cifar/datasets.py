"""What CIFAR-10 and CIFAR-100 are: classes, class names, and the binary archives' files.

Free of TensorFlow, so the command line checks a dataset and its folder before TensorFlow starts.
"""

import collections
import glob
import os

from resnet_cifar.errors import UserError
from resnet_cifar.hparams_check import HParamsError

IMAGE_SIZE = 32
DEPTH = 3
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * DEPTH

# The real CIFAR-10 subset beside a checkout (its README says what it holds): the data of the
# tests, and what scripts/benchmark.py and scripts/sweep.py use when given no --data_dir.
SHARED_SUBSET = os.path.normpath(os.path.join(__file__, '..', '..', '..', 'shared', 'data', 'cifar10-subset'))


def data_dir_or_shared(data_dir):
    """`data_dir`, else the shared subset where it is beside the checkout, else None."""
    return data_dir or (SHARED_SUBSET if os.path.isdir(SHARED_SUBSET) else None)


DatasetSpec = collections.namedtuple('DatasetSpec', 'num_classes label_offset train_files test_files folder tfds_name')
DATASETS = {
    # CIFAR-10 records: 1 label byte + 3072 pixel bytes (1024 red, 1024 green, 1024 blue).
    'cifar10': DatasetSpec(10, 0, 'data_batch_*.bin', 'test_batch.bin', 'cifar-10-batches-bin', 'cifar10'),
    # CIFAR-100 records: coarse label byte + fine label byte + 3072 pixel bytes; the fine label is used.
    'cifar100': DatasetSpec(100, 1, 'train.bin', 'test.bin', 'cifar-100-binary', 'cifar100'),
}
# The label names, in label order, as the archives' batches.meta.txt and fine_label_names list them.
CLASS_NAMES = {
    'cifar10': 'airplane automobile bird cat deer dog frog horse ship truck'.split(),
    'cifar100': (
        'apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can '
        'castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin '
        'elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster '
        'man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck '
        'pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk '
        'skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger '
        'tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm'
    ).split(),
}


class DataError(UserError):
    """Input the user pointed at is missing or malformed; the message names the file or setting."""


def record_bytes(dataset):
    return DATASETS[dataset].label_offset + 1 + IMAGE_BYTES


def _holds(folder, spec):
    """Whether `folder` has the dataset's archive folder or any of its batch files."""
    names = (spec.folder, spec.train_files, spec.test_files)
    return any(glob.glob(os.path.join(glob.escape(folder), name)) for name in names)


def data_patterns(dataset, data_dir):
    """(train pattern, test pattern) inside data_dir, or inside the archive's folder below it.

    A folder holding the other dataset's archive, and not this one's, is refused: it names the
    dataset the folder looks like, as a batch file of the other dataset's record size is.
    """
    spec = DATASETS[dataset]
    nested = os.path.join(data_dir, spec.folder)
    if os.path.isdir(nested):
        data_dir = nested
    elif not _holds(data_dir, spec):
        for other, other_spec in DATASETS.items():
            if other != dataset and _holds(data_dir, other_spec):
                raise DataError(
                    f'{data_dir} has no {dataset} files ({spec.train_files}, {spec.test_files}); it looks like '
                    f'{other} ({other_spec.train_files}, {other_spec.test_files}): pass dataset={other}',
                    'data_dir',
                    mentions=['dataset'],
                )
    data_dir = os.path.abspath(data_dir)
    return os.path.join(data_dir, spec.train_files), os.path.join(data_dir, spec.test_files)


def num_classes_of(dataset, asked=None):
    """The dataset's number of classes, which num_classes follows: an unknown dataset, or another
    `asked` number of classes, is refused."""
    if dataset not in DATASETS:
        raise UserError(f'expected one of {", ".join(DATASETS)}, got {dataset!r}', 'dataset')
    num_classes = DATASETS[dataset].num_classes
    if asked is not None and asked != num_classes:
        raise HParamsError(f'hparam num_classes: follows dataset ({dataset}: {num_classes})', mentions=['dataset'])
    return num_classes
