"""The run folder LOG_ROOT: its hparams.json, its checkpoints, and the one check a checkpoint
passes before resume, eval, predict or export uses it.

Every checkpoint carries the run's configuration (`run_config`), so a folder's checkpoints say
which network they hold even without hparams.json.
"""

import json
import os
import socket
import time

import tensorflow as tf
from absl import logging

from resnet_cifar import run_config
from resnet_cifar.errors import UserError

RUN_CONFIG = 'hparams.json'
OWNER = 'owner.json'
# The data settings that decide which images are training images, and in which order.
TRAINING_IMAGES = ('data_source', 'train_data_path', 'validation_size', 'seed')
CONFIG_KEY = 'run_config/.ATTRIBUTES/VARIABLE_VALUE'


class RunError(UserError):
    """The run cannot go on as asked; the message says why and what to do."""


class WriteError(RunError):
    """A write into the run failed: a full disk, a quota, a read-only or vanished folder, an I/O error."""


def write_failed(path, error, newest=None):
    """The WriteError for `error` (an OSError or a TensorFlow OpError) while writing `path`;
    `newest` names the newest complete checkpoint, which a run started again resumes from."""
    reason = (getattr(error, 'strerror', None) or getattr(error, 'message', None) or str(error)).splitlines()[0]
    resume = f'; the newest complete checkpoint is {newest}' if newest else ''
    return WriteError(
        f'cannot write {path}: {reason}{resume}; free space or fix the folder, then run the same command again'
    )


def write_json(path, values, newest=None):
    """Writes atomically, so a reader never sees half a file; `newest` names the newest complete
    checkpoint, for the error when the write fails."""
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'w') as f:
            json.dump(values, f, indent=2)
            f.write('\n')
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e, newest) from None
    finally:  # a failed or interrupted write leaves no partial file
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_config(log_root):
    """The RunConfig that LOG_ROOT/hparams.json saved, or None for a new run."""
    path = os.path.join(log_root, RUN_CONFIG)
    if not os.path.exists(path):
        return None
    try:
        return run_config.from_json(read_json(path), log_root, source=path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(
            f'{path}: unreadable run configuration ({e}); move it away or use another log_root', mentions=['log_root']
        ) from None


def write_config(config):
    path = os.path.join(config.log_root, RUN_CONFIG)
    write_json(path, config.to_json(), newest=tf.train.latest_checkpoint(config.log_root) or 'none')


def make_dir(path, key):
    """Creates the folder (the setting `key` names) and checks it can be written, before any work."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f'.write-test-{os.getpid()}')
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise RunError(f'cannot write to {path}: {e.strerror}', key) from None
    return path


# ---------------------------------------------------------------------------
# Checkpoints.


def checkpoints(log_root):
    """The checkpoints of the folder, newest first. One is listed only once it is completely
    written: the `checkpoint` index file is replaced atomically after the data."""
    state = tf.train.get_checkpoint_state(log_root)
    return list(reversed(state.all_model_checkpoint_paths)) if state else []


def unreadable(path):
    """Why the checkpoint at `path` cannot be read, or None. Reads every tensor, so a truncated
    or corrupted file shows here rather than halfway through a restore."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:  # a truncated tensor raises IndexError
        return f'{path} is unreadable ({getattr(e, "message", e)})'.splitlines()[0]
    return None


def checkpoint_config(path):
    """The RunConfig a (readable) checkpoint of this trainer carries, or None for another writer's."""
    reader = tf.train.load_checkpoint(path)
    if not reader.has_tensor(CONFIG_KEY):
        return None
    log_root = os.path.dirname(path)
    return run_config.from_json(json.loads(reader.get_tensor(CONFIG_KEY)), log_root, source=path)


def foreign(path, config=None):
    """Why the readable checkpoint at `path` cannot serve `config`'s network (or, with no config,
    any run of this trainer), or None."""
    saved = checkpoint_config(path)
    if saved is None:
        return f'{path} was not written by this trainer'
    if config is not None and saved.network() != config.network():
        return f'{path} belongs to a run of {saved.describe()}, not {config.describe()}'
    return None


def checkpoint_problem(path, config=None):
    """Why the checkpoint at `path` cannot be used for `config`, or None: the one check."""
    return unreadable(path) or foreign(path, config)


def usable(paths, purpose, config=None):
    """The checkpoints of `paths` that pass the check, in order, for `purpose` ('evaluate').
    An unreadable one is skipped with a warning (another may serve); a foreign one stops
    everything, since the folder holds another run."""
    for path in paths:
        problem = unreadable(path)
        if problem:
            logging.warning('skipping %s', problem)
            continue
        problem = foreign(path, config)
        if problem:
            raise RunError(f'cannot {purpose}: {problem}')
        yield path


def resume_checkpoint(config):
    """The newest checkpoint in log_root, or None for a fresh start; refused with a way out if it
    is damaged or foreign, since resuming from an older one would silently drop steps."""
    paths = checkpoints(config.log_root)
    if not paths:
        return None
    problem = checkpoint_problem(paths[0], config)
    if problem is None:
        _check_same_training_images(paths[0], config)
        return paths[0]
    older = [path for path in paths[1:] if checkpoint_problem(path, config) is None]
    way_out = (
        f'{older[0]} is usable: move the files of {os.path.basename(paths[0])}.* away to resume from it'
        if older
        else 'no earlier checkpoint is usable: use another log_root'
    )
    raise RunError(f'cannot resume: {problem}; {way_out}', mentions=['log_root'])


def _check_same_training_images(path, config):
    """Refuses a resume that would train on other images: held-out validation images, say."""
    saved = checkpoint_config(path).data
    changed = [name for name in TRAINING_IMAGES if getattr(saved, name) != getattr(config.data, name)]
    if changed:
        started = ', '.join(f'{name}={getattr(saved, name)!r}' for name in changed)
        asked = ', '.join(f'{name}={getattr(config.data, name)!r}' for name in changed)
        raise RunError(
            f'cannot resume: {path} was trained with {started}; resuming with {asked} would change which images '
            'are training images; drop that setting, or use another log_root',
            mentions=[*changed, 'log_root'],
        )


# ---------------------------------------------------------------------------
# One writer per folder: the owner record.


def _boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid):
    """When process `pid` started, in clock ticks since boot (Linux), or None: with the boot id it
    tells a live owner from a later process that was given the same id."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _still_running(record):
    """Whether the recorded owner runs: True, False, or None when this host cannot tell (another host)."""
    if record.get('host') != socket.gethostname():
        return None
    if record.get('boot_id') != _boot_id():
        return False  # the machine restarted since
    try:
        os.kill(record['pid'], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    start = _process_start(record['pid'])
    return start is None or record.get('process_start') in (None, start)


class Ownership:
    """`with Ownership(folder, mode, key):` makes this process the one writer of `folder`, recorded
    in FOLDER/owner.json (process id, host, start time, mode). A second writer is refused before
    it writes anything; a record left by a process that is gone is taken over with a warning."""

    def __init__(self, folder, mode, key):
        self.folder, self.mode, self.key = folder, mode, key
        self.path = os.path.join(folder, OWNER)

    def __enter__(self):
        make_dir(self.folder, self.key)
        mine = {
            'pid': os.getpid(),
            'host': socket.gethostname(),
            'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
            'mode': self.mode,
            'boot_id': _boot_id(),
            'process_start': _process_start(os.getpid()),
        }
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_take_over()
                continue
            except OSError as e:
                raise write_failed(self.path, e) from None
            try:
                with os.fdopen(fd, 'w') as f:
                    json.dump(mine, f, indent=2)
            except OSError as e:
                os.remove(self.path)
                raise write_failed(self.path, e) from None
            return self.folder

    def _refuse_or_take_over(self):
        try:
            record = read_json(self.path)
        except (OSError, ValueError):  # being written this instant, or left half-written by a crash
            if time.time() - os.path.getmtime(self.path) < 5:
                time.sleep(0.2)
                return
            record = {'pid': '?', 'host': '?', 'started': '?', 'mode': '?'}
            running = False
        else:
            running = _still_running(record)
        owner = f'{record["mode"]} process {record["pid"]} on {record["host"]}, started {record["started"]}'
        if running is False:
            logging.warning('%s: taking it over from %s, which is no longer running', self.folder, owner)
            os.remove(self.path)
            return
        unsure = f'; if that process is gone, remove {self.path}' if running is None else ''
        raise RunError(
            f'{self.folder} is in use by {owner}; wait for it to finish, or use another {self.key}{unsure}',
            self.key,
            [self.key],
        )

    def __exit__(self, *exc):
        try:
            if read_json(self.path).get('pid') == os.getpid():
                os.remove(self.path)
        except (OSError, ValueError):
            pass  # gone with its folder, or taken over: nothing of ours to remove
