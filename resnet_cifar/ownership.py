"""One writer per folder: `with Ownership(folder, mode, key):` makes this process the one writer
of `folder`, recorded in FOLDER/owner.json (process id, host, start time, mode, the machine's boot
id and the process's start time).

A second writer is refused before it writes anything; a record left by a process that is gone is
taken over with a warning; the same process may claim a folder it already owns (train_and_eval
with eval_dir equal to log_root). owner.json is written whole or not at all, so a damaged one was
damaged by someone else: it is refused in one line, never guessed at.
"""

import errno
import json
import os
import socket
import time

from absl import logging

from resnet_cifar import json_files
from resnet_cifar.atomic_write import make_dir
from resnet_cifar.errors import RunError, write_failed

OWNER = 'owner.json'


def boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return None


def process_start(pid):
    """When process `pid` started, in clock ticks since boot (Linux), or None: with the boot id it
    tells a live owner from a later process that was given the same id."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def this_process(mode):
    """The owner record of this process, for `mode`."""
    return {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
        'mode': mode,
        'boot_id': boot_id(),
        'process_start': process_start(os.getpid()),
    }


# What each key of a record must hold: (check, what it should be). boot_id and process_start may be
# null: /proc is Linux's.
RECORD_KEYS = {
    'pid': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, 'a positive process id'),
    'host': (lambda v: isinstance(v, str) and v != '', 'a host name'),
    'started': (lambda v: isinstance(v, str), 'a time'),
    'mode': (lambda v: isinstance(v, str) and v != '', 'a mode'),
    'boot_id': (lambda v: v is None or isinstance(v, str), 'a boot id or null'),
    'process_start': (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), 'an integer or null'),
}


def read_record(path):
    """The owner record at `path`, checked key by key; a damaged one is refused in one line."""
    folder = os.path.dirname(path)
    way_out = f'if no process uses {folder}, remove {path}'
    return json_files.read_checked(path, RECORD_KEYS, way_out, error=RunError)


def still_running(record):
    """Whether the recorded owner runs: True, False, or None when this host cannot tell (another host)."""
    if record['host'] != socket.gethostname():
        return None
    if record['boot_id'] != boot_id():
        return False  # the machine restarted since
    try:
        os.kill(record['pid'], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    start = process_start(record['pid'])
    return start is None or record['process_start'] in (None, start)


def _is_this_process(record):
    return (
        record['pid'] == os.getpid()
        and record['host'] == socket.gethostname()
        and record['process_start'] in (None, process_start(os.getpid()))
    )


def create_exclusively(path, values):
    """Writes `values` to `path` whole, and only if no file is there: written beside it, then
    linked into place (a link fails if the name exists). Returns False if one was there. Where
    the file system has no links, the file is created exclusively and written at once."""
    text = json.dumps(values, indent=2) + '\n'
    staging = f'{path}.tmp-{os.getpid()}'
    try:
        with open(staging, 'w') as f:
            f.write(text)
        try:
            os.link(staging, path)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise  # FileExistsError among them: another process owns the folder
            with open(path, 'x') as f:
                f.write(text)
    except FileExistsError:
        return False
    except OSError as e:
        raise write_failed(path, e) from None
    finally:
        if os.path.lexists(staging):
            os.remove(staging)
    return True


class Ownership:
    """`with Ownership(folder, mode, key):` this process is the one writer of `folder` within."""

    def __init__(self, folder, mode, key):
        self.folder, self.mode, self.key = folder, mode, key
        self.path = os.path.join(folder, OWNER)
        self.nested = False  # the folder was this process's already: the outer claim releases it

    def __enter__(self):
        make_dir(self.folder, self.key)
        mine = this_process(self.mode)
        while not create_exclusively(self.path, mine):
            try:
                record = read_record(self.path)
            except FileNotFoundError:
                continue  # its owner released it this instant
            if _is_this_process(record):
                self.nested = True
                break
            self._refuse_or_take_over(record)
        return self.folder

    def _refuse_or_take_over(self, record):
        owner = f'{record["mode"]} process {record["pid"]} on {record["host"]}, started {record["started"]}'
        running = still_running(record)
        if running is False:
            logging.warning('%s: taking it over from %s, which is no longer running', self.folder, owner)
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass  # another process took it over first; the next attempt sees its record
            return
        unsure = f'; if that process is gone, remove {self.path}' if running is None else ''
        raise RunError(
            f'{self.folder} is in use by {owner}; wait for it to finish, or use another {self.key}{unsure}',
            self.key,
            [self.key],
        )

    def __exit__(self, *exc):
        if self.nested:
            return
        try:
            if _is_this_process(read_record(self.path)):
                os.remove(self.path)
        except (OSError, RunError):
            pass  # gone with its folder, taken over, or damaged since: nothing of ours to remove
