"""JSON files: read back whatever they hold (a missing, unreadable, binary, truncated, huge or
deeply nested file gives one line naming it and what to do, never a traceback), and written whole
or not at all."""

import json
import re

from resnet_cifar import atomic_write
from resnet_cifar.errors import UserError, write_failed

MAX_BYTES = 16 * 2**20  # far above any file the project writes; a larger one is not one of them


def read_json(path, way_out, expected=dict, key=None, mentions=(), error=UserError):
    """The value of the JSON file at `path`, of type `expected`; a file that cannot be used raises a
    UserError naming `path` (and the setting `key` it came from) and ending with `way_out` (which
    may name the settings `mentions`); `error` is the UserError class raised.
    FileNotFoundError is raised as it is: whether a missing file is a fault is the caller's call."""
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f'{path}: cannot read it ({e.strerror}); {way_out}', key, mentions) from None
    if len(data) > MAX_BYTES:
        raise error(
            f'{path}: larger than {MAX_BYTES >> 20} MB, not a JSON file of this project; {way_out}', key, mentions
        )
    try:
        value = json.loads(data.decode('utf-8'))
    except UnicodeDecodeError:
        raise error(f'{path}: not a text file (binary data); {way_out}', key, mentions) from None
    except json.JSONDecodeError as e:
        raise error(f'{path}: not valid JSON ({e.msg} at line {e.lineno}); {way_out}', key, mentions) from None
    except RecursionError:
        raise error(f'{path}: JSON nested too deeply to be read; {way_out}', key, mentions) from None
    if not isinstance(value, expected):
        kind = {dict: 'a JSON object', list: 'a JSON list'}.get(expected, expected.__name__)
        raise error(f'{path}: expected {kind}, got {_json_type(value)}; {way_out}', key, mentions)
    return value


def read_checked(path, keys, way_out, error=UserError):
    """The JSON object at `path` (read_json), each of `keys` checked: {key: (valid, expected)} or
    (valid, expected, required); a key missing (and required) or not valid(value) raises `error`
    naming the file, the key and what it should be, ending with `way_out`."""
    values = read_json(path, way_out, error=error)
    for key, (valid, expected, *optional) in keys.items():
        if key not in values:
            if optional and not optional[0]:
                continue
            raise error(f'{path}: {key} is missing; {way_out}')
        if not valid(values[key]):
            raise error(f'{path}: {key}: expected {expected}, got {values[key]!r}; {way_out}')
    return values


def _json_type(value):
    names = {dict: 'an object', list: 'a list', str: 'a string', bool: 'true or false', type(None): 'null'}
    return names.get(type(value), 'a number')


def write_json(path, values, newest=None):
    """Writes atomically, so a reader never sees half a file, each list of numbers on one line (a
    confusion matrix reads as rows); `newest` names the newest complete checkpoint, for the error
    when the write fails."""
    # A list that json.dumps spread over lines ('[' then a newline, never inside a string), with no strings in it.
    text = re.sub(r'\[\n[^\[\]{}"]*\]', lambda m: json.dumps(json.loads(m.group())), json.dumps(values, indent=2))
    try:
        atomic_write.write_text(path, text + '\n')
    except OSError as e:
        raise write_failed(path, e, newest) from None
