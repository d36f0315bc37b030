"""Downloads, verifies and unpacks the CIFAR-10/100 binary archives.

    python scripts/download_cifar.py --dataset=cifar10 --data_dir=data

leaves data/cifar-10-batches-bin/ (or data/cifar-100-binary/), ready for
`resnet_main.py --data_dir=data`. tensorflow-datasets' download manager does the fetching,
the progress bar and the checksum check, against the checksums tensorflow-datasets ships.
"""

import os
import socket
import urllib.parse

from absl import flags

from resnet_cifar import datasets, startup
from resnet_cifar.errors import UserError, run_program

flags.DEFINE_enum('dataset', 'cifar10', list(datasets.DATASETS), 'Which archive.')
flags.DEFINE_string('data_dir', 'data', 'Where the unpacked folder goes.')
FLAGS = flags.FLAGS

URLS = {
    'cifar10': 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
    'cifar100': 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz',
}


def main(argv):
    del argv
    folder = datasets.DATASETS[FLAGS.dataset].folder
    target = os.path.join(FLAGS.data_dir, folder)
    if os.path.isdir(target) and os.listdir(target):
        print(f'{target} already exists; nothing to do')
        return
    url = URLS[FLAGS.dataset]
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)  # fails at once offline, where the download would retry for minutes
    except OSError as e:
        raise UserError(f'cannot download {url}: offline? ({host}: {e.strerror})') from None
    startup.setup()  # tensorflow-datasets imports TensorFlow: quietly, as a run does
    import tensorflow_datasets as tfds

    downloads = os.path.join(FLAGS.data_dir, 'downloads')
    manager = tfds.download.DownloadManager(
        download_dir=downloads,
        extract_dir=downloads,
        url_infos=tfds.download.checksums.get_all_url_infos(),
        force_checksums_validation=True,
    )
    try:
        extracted = manager.download_and_extract(url)
    except Exception as e:  # refused, interrupted, or a checksum mismatch: the user needs the reason, in one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f'cannot download {url}: {reason}') from None
    os.makedirs(FLAGS.data_dir, exist_ok=True)
    os.replace(os.path.join(extracted, folder), target)
    print(f'{FLAGS.dataset} is in {target}')


if __name__ == '__main__':
    run_program(main)
