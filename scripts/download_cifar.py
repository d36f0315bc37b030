"""Downloads, verifies and unpacks the CIFAR-10/100 binary archives.

    python scripts/download_cifar.py --dataset=cifar10 --data_dir=data

leaves data/cifar-10-batches-bin/ (or data/cifar-100-binary/), ready for
`resnet_main.py --data_dir=data`. tensorflow-datasets' download manager does the fetching, the
progress bar and the checksum check, against the checksums tensorflow-datasets ships. Offline, put
the archive fetched elsewhere (cifar-10-binary.tar.gz) into data/ first: it is checked against the
same checksum and unpacked.
"""

import hashlib
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


def _offline_hint(url):
    """What to do without a connection: the archive fetched on another machine, or tensorflow-datasets' copy."""
    local = os.path.join(FLAGS.data_dir, os.path.basename(url))
    return (
        f'fetch {url} on a machine that can and put it at {local}, then run this again (it is checked and '
        "unpacked), or train on tensorflow-datasets' prepared copy with --data_source=tfds (--tfds_data_dir)"
    )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def main(argv):
    del argv
    folder = datasets.DATASETS[FLAGS.dataset].folder
    target = os.path.join(FLAGS.data_dir, folder)
    if os.path.isdir(target) and os.listdir(target):
        print(f'{target} already exists; nothing to do')
        return
    url = URLS[FLAGS.dataset]
    local = os.path.join(FLAGS.data_dir, os.path.basename(url))  # an archive fetched elsewhere
    if not os.path.isfile(local):
        host = urllib.parse.urlparse(url).hostname
        try:
            socket.getaddrinfo(host, 443)  # fails at once offline, where the download would retry for minutes
        except OSError as e:
            raise UserError(f'cannot download {url} ({host}: {e.strerror}); {_offline_hint(url)}') from None
    startup.setup(command=True)  # tensorflow-datasets imports TensorFlow: quietly, as a run does
    import tensorflow_datasets as tfds

    url_infos = tfds.download.checksums.get_all_url_infos()
    if os.path.isfile(local) and _sha256(local) != url_infos[url].checksum:
        raise UserError(f'{local}: not the archive of {url} (another SHA-256 checksum); fetch it again')
    downloads = os.path.join(FLAGS.data_dir, 'downloads')
    manager = tfds.download.DownloadManager(
        download_dir=downloads, extract_dir=downloads, url_infos=url_infos, force_checksums_validation=True
    )
    try:
        extracted = manager.extract(local) if os.path.isfile(local) else manager.download_and_extract(url)
    except Exception as e:  # refused, interrupted, or a checksum mismatch: the user needs the reason, in one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f'cannot download or unpack {url}: {reason}; {_offline_hint(url)}') from None
    os.makedirs(FLAGS.data_dir, exist_ok=True)
    os.replace(os.path.join(extracted, folder), target)
    print(f'{FLAGS.dataset} is in {target}')


if __name__ == '__main__':
    run_program(main, FLAGS)
