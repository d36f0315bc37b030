"""Process-wide settings changed for the length of a block, and always put back: signal handlers,
environment variables, the recursion limit, the hook of exceptions in threads."""

import contextlib
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signal_handlers(handler, signals=STOP_SIGNALS):
    """Within, `signals` go to `handler` (None: they keep theirs, which whatever runs within may
    replace); after, each has the handler it had before."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    if handler is not None:
        for sig in signals:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def environment(values, replace=False):
    """Within, os.environ has `values` (with `replace`, only them): what processes started
    meanwhile inherit. After, it is as it was."""
    saved = dict(os.environ)
    if replace:
        os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def recursion_limit(limit):
    """Within, Python's recursion limit is at least `limit`."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


@contextlib.contextmanager
def thread_exceptions_filtered(ignore):
    """Within, an exception that ends a thread is not printed where `ignore(args)` says so
    (args: threading.ExceptHookArgs); the others go to the hook there was."""
    previous = threading.excepthook

    def hook(args):
        if not ignore(args):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
