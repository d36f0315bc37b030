"""The training state: one value holding everything a checkpoint holds, each part saved under its
field's name, so what is saved is what the training step changes.

    state = TrainState(model, optimizer, step, averaged_model, lookahead)
    checkpoint = state.checkpoint(saved_config)  # model, optimizer, step, [averaged_model], [lookahead], run_config
"""

import typing

import keras
import tensorflow as tf

RUN_CONFIG = 'run_config'  # the run's configuration as JSON, a string variable beside the state


def saved_key(name):
    """Where a checkpoint holds the variable saved under `name` (a TrainState field, or RUN_CONFIG)."""
    return f'{name}/.ATTRIBUTES/VARIABLE_VALUE'


STEP_KEY = saved_key('step')
CONFIG_KEY = saved_key(RUN_CONFIG)


class TrainState(typing.NamedTuple):
    model: keras.Model  # the network trained
    optimizer: keras.optimizers.Optimizer  # with its slots (momentum)
    step: tf.Variable  # steps taken, int64
    averaged_model: keras.Model | None = None  # with ema_decay, the weight average that eval uses
    lookahead: tf.Module | None = None  # with lookahead_every, the average copied into the weights (recipe.Lookahead)

    @property
    def eval_model(self):
        """The model eval uses: the weight average with ema_decay, else the model trained."""
        return self.model if self.averaged_model is None else self.averaged_model

    def checkpoint(self, saved_config):
        """A tf.train.Checkpoint of every part there is, and `saved_config` (a string variable)."""
        parts = {name: part for name, part in self._asdict().items() if part is not None}
        return tf.train.Checkpoint(**parts, **{RUN_CONFIG: saved_config})


def holds(path, field):
    """Whether the checkpoint at `path` holds the TrainState part `field` ('averaged_model', 'lookahead')."""
    return any(name.startswith(field + '/') for name, _ in tf.train.list_variables(path))
