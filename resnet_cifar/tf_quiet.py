"""TensorFlow's own warnings silenced for a moment, where the project says the same thing in its
words (a damaged checkpoint index) or where they are about TensorFlow's internals (a deprecated
call inside PreemptionCheckpointHandler)."""

import contextlib

import tensorflow as tf


@contextlib.contextmanager
def tensorflow_warnings_off():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel('ERROR')
    try:
        yield
    finally:
        logger.setLevel(level)
