"""Writes a reader sees whole or not at all: the new file or folder is made beside its target
under a temporary name, then renamed over it in one step. A failed or interrupted write leaves
nothing behind, and the old content stays."""

import contextlib
import os
import shutil


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
