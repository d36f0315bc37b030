"""Writes a reader sees whole or not at all: the new file or folder is made beside its target
under a temporary name, then renamed over it in one step. A failed or interrupted write leaves
nothing behind, and the old content stays. And folders made, and checked writable, before any work."""

import contextlib
import os
import shutil

from resnet_cifar.errors import RunError


@contextlib.contextmanager
def staged(path):
    """Yields a temporary path beside `path` to write a file or a folder into; when the block ends
    without an error, it replaces `path` (a file, or an empty folder). Raises OSError."""
    staging = f'{os.path.normpath(path)}.tmp-{os.getpid()}'
    try:
        yield staging
        os.replace(staging, path)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        elif os.path.lexists(staging):
            os.remove(staging)


def write_text(path, text):
    """Replaces the file at `path` with `text`, as it is (no newline translation). Raises OSError."""
    with staged(path) as staging, open(staging, 'w', newline='') as f:
        f.write(text)


def make_dir(path, key):
    """Creates the folder (the setting `key` names) and checks it can be written, before any work."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunError(f'{path} is a file, not a folder; give a folder', key)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise RunError(f'cannot write to {path}: {e.strerror}', key) from None
    return path
