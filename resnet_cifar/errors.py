"""User errors, and how a command-line program reports them: one line, a meaningful exit code.

Modules below the command line name settings by their configuration keys (`log_root`,
`hparams_override`); a program words the same line with the flag each setting came from, so a
Python caller and a command-line user each read the names they typed.
"""

import functools
import gc
import os
import re
import signal
import sys

from absl import app, logging

from resnet_cifar import process_settings


class UserError(ValueError):
    """A setting, file or value the user gave cannot be used; the message says why and what to do.

    `key` is the setting the message is about: the line starts with its name. `mentions` are
    other settings the message names in its text.
    """

    def __init__(self, message, key=None, mentions=()):
        self.message, self.key, self.mentions = message, key, tuple(mentions)
        super().__init__(self.line())

    def line(self, name=str):
        """The one line, with each setting named by name(key): the key itself, or its flag."""
        text = self.message
        for key in self.mentions:
            text = re.sub(rf'(?<![\w./-]){re.escape(key)}(?![\w/])', lambda _, key=key: name(key), text)
        return f'{name(self.key)}: {text}' if self.key else text


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: raised where the program is, so it unwinds as after Ctrl-C."""

    def __init__(self, signal_name='SIGINT'):
        super().__init__(signal_name)
        self.signal_name = signal_name


def exit_code(signal_name):
    """A program stopped by the signal SIGNAME exits with 128 + its number, as a shell reports it."""
    return 128 + signal.Signals[signal_name].value


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def reason(error):
    """The first line of an OSError's or a TensorFlow OpError's message, without TensorFlow's
    `{{function_node ...}}` decorations."""
    text = getattr(error, 'strerror', None) or getattr(error, 'message', None) or str(error)
    text = re.sub(r'\{\{function_node [^{}]*\}\}|\[Op:\w+\]( name: \S*)?', '', text).strip()
    return text.splitlines()[0] if text else type(error).__name__


def flag_name(key, flag_values):
    """A setting as a program with `flag_values` (its absl FLAGS) names it: `--key` when it is one of
    its flags, else the key."""
    return f'--{key}' if key in flag_values else key


def _fail(line):
    logging.flush()
    sys.stderr.write(f'error: {line}\n')
    sys.exit(2)


def exit_on_error(main, flag_values=None, name=None, stop_hint=''):
    """`main` wrapped for a command line (`app.run(exit_on_error(main, FLAGS))`), never ending in a
    traceback:

    a UserError or OSError becomes one `error: ...` line on standard error and exit code 2, each
    setting named by name(key), by default flag_name(key, flag_values) (without flag_values: the
    key); SIGINT or SIGTERM become a `stopped by SIGNAL` line (+ `stop_hint`)
    and exit code 128 + the signal's number. main's return value is returned (app.run exits with it).
    """

    if name is None:
        name = str if flag_values is None else functools.partial(flag_name, flag_values=flag_values)

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            with process_settings.signal_handlers(_raise_stopped):
                return main(*args, **kwargs)
        except UserError as e:
            _fail(e.line(name))
        except OSError as e:
            _fail(f'{e.filename}: {e.strerror}' if e.filename and e.strerror else str(e))
        except KeyboardInterrupt as e:
            stopped_by = e.signal_name if isinstance(e, Stopped) else 'SIGINT'
            logging.flush()
            sys.stderr.write(f'stopped by {stopped_by}{stop_hint}\n')
            sys.exit(exit_code(stopped_by))

    return wrapped


class RunError(UserError):
    """The run cannot go on as asked; the message says why and what to do."""


class WriteError(RunError):
    """A write into the run failed: a full disk, a quota, a read-only or vanished folder, an I/O error."""


def write_failed(path, error, newest=None):
    """The WriteError for `error` (an OSError or a TensorFlow OpError) while writing `path`;
    `newest` names the newest complete checkpoint, which a run started again resumes from."""
    resume = f'; the newest complete checkpoint is {newest}' if newest else ''
    return WriteError(
        f'cannot write {path}: {reason(error)}{resume}; free space or fix the folder, then run the same command again'
    )


HELP_FLAGS = ('-h', '-?', '--help', '--helpshort', '--helpfull')


def flag_error_line(error):
    """absl's message for a flag it refused, as this project words a mistake: the flag first."""
    text = str(error)
    match = re.fullmatch(r'flag (--[\w-]+)=(.*?): (.*)', text, re.S)
    if not match:
        return text.replace("Unknown command line flag '", "unknown flag '--")
    name, value, problem = match.groups()
    problem = re.sub(r'^Flag --[\w-]+ must have a value other than None\.', 'required: give it a value', problem)
    choices = re.fullmatch(r'value should be one of <(.*)>', problem)
    if choices:
        problem = f'expected one of {", ".join(choices.group(1).split("|"))}, got {value!r}'
    return f'{name}: {problem}'


def _flags_parser(flag_values):
    """absl's flag parsing of `flag_values`, a refused flag being one line and exit code 2 as every
    other mistake."""

    def parse(argv):
        try:
            return flag_values(argv)
        except app.flags.Error as e:
            _fail(flag_error_line(e))

    return parse


def _end_at_once(code):
    """From here, SIGINT or SIGTERM ends the process at once with `code`: the program's work is done,
    and a stop while Python shuts down (its atexit callbacks) must not print a traceback."""

    def end(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, end)


def run_program(main, flag_values, name=None, stop_hint=''):
    """A program's `app.run(main)` over its `flag_values` (its FLAGS), as every program of the project
    ends: exit_on_error(main, flag_values, name, stop_hint); a refused flag in one line with exit
    code 2; --help with exit code 0; a stop that comes after main has returned ends the process
    quietly with main's exit code; and the objects made so far are left out of shutdown's garbage
    collections (gc.freeze), which would otherwise keep a finished command running on
    (docs/performance.md)."""
    try:
        app.run(exit_on_error(main, flag_values, name, stop_hint), flags_parser=_flags_parser(flag_values))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):  # absl ends --help with 1
            code = 0
        _end_at_once(code)
        gc.freeze()  # Python's collections at shutdown would walk every object TensorFlow made (docs/performance.md)
        sys.exit(code)
