"""Using a trained model: class probabilities for image files, and its export (export_formats.py).

The checkpoint says which network it holds, so neither needs the run's settings repeated.
"""

import collections
import errno
import os

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
from resnet_cifar import (
    atomic_write,
    checkpoint_index,
    errors,
    export_formats,
    portable_model,
    recipe,
    restore,
)
from resnet_cifar.errors import RunError

TrainedModel = collections.namedtuple('TrainedModel', 'model config')  # what load() gives: (model, config)


class Predictions(collections.namedtuple('Predictions', 'names probabilities labels class_names')):
    """predict()'s result: each image's name, its class probabilities [N, num_classes], its label
    (None for an image file) and the class names; describe() words it."""

    def __repr__(self):
        labelled = sum(label is not None for label in self.labels)
        return f'<Predictions of {len(self.names)} images ({labelled} labelled) over {len(self.class_names)} classes>'


def load(log_root=None, checkpoint=None):
    """TrainedModel(model, config): the trained network of `checkpoint`, or of the newest readable
    checkpoint in log_root (its weight average, when it holds one), and the RunConfig it was trained
    with; `model, config = load(...)` works too.

    `model` is the Keras model that trains: it takes float32 images [N, 32, 32, 3] standardized
    per image (`cifar_input.standardize(uint8_images)`) and returns logits [N, num_classes].
    Predict's probabilities are `tf.nn.softmax(recipe.inference_logits(model, standardized,
    config.hparams.flip_tta))`. It holds this project's layers: for a model that loads without
    the project, use export() or `portable_model.build(model, config.hparams)`."""
    if checkpoint:
        problem = checkpoint_index.checkpoint_problem(checkpoint)
        if problem:
            raise RunError(problem, 'checkpoint')
        path = checkpoint
    else:
        paths = checkpoint_index.checkpoints(log_root)
        if not paths:
            raise RunError(
                f'{log_root} holds no checkpoints; train first, or give one with checkpoint', 'log_root', ['checkpoint']
            )
        path = next(checkpoint_index.usable(paths, 'use it'), None)
        if path is None:
            raise RunError(f'no readable checkpoint in {log_root}', 'log_root')
    config = checkpoint_index.checkpoint_config(path)
    model = restore.restore_model(path, config.hparams)
    logging.info('using %s', path)
    return TrainedModel(model, config)


def predict(image_paths, log_root=None, checkpoint=None, batch_size=100):
    """Class probabilities of image files (any size, resized to 32x32) and binary batch files
    (each record, with its label), from a trained checkpoint."""
    if not image_paths:
        raise RunError('give image files or binary batch files', 'images')
    model, config = load(log_root, checkpoint)
    examples = cifar_input.read_image_files(image_paths, config.dataset)
    images = tf.stack([image for _, image, _ in examples])
    probabilities = tf.concat(
        [
            tf.nn.softmax(
                recipe.inference_logits(
                    model, cifar_input.standardize(batch), config.hparams.flip_tta, config.hparams.translate_tta
                )
            )
            for batch in tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        ],
        axis=0,
    ).numpy()
    names, _, labels = zip(*examples, strict=True)
    return Predictions(list(names), probabilities, list(labels), config.class_names)


def describe(predictions, top_k=3, max_images=None):
    """One line per image (the first `max_images` of them, None: all), its top classes with their
    probabilities (and its label, if known), then the precision over every labelled image."""
    lines, right = [], 0
    class_names = predictions.class_names
    for name, probs, label in zip(predictions.names, predictions.probabilities, predictions.labels, strict=True):
        top = np.argsort(-probs)[:top_k]
        line = f'{name}: ' + ', '.join(f'{class_names[i]} {probs[i]:.3f}' for i in top)
        if label is not None:
            line += f' (true: {class_names[label]})'
            right += int(top[0] == label)
        lines.append(line)
    if max_images is not None and len(lines) > max_images:
        lines = [*lines[:max_images], f'... and {len(lines) - max_images} more images']
    labelled = sum(label is not None for label in predictions.labels)
    if labelled:
        lines.append(f'precision on the {labelled} labelled images: {right / labelled:.4f}')
    return lines


def export(export_dir, log_root=None, checkpoint=None, export_format='saved_model'):
    """Writes the trained model into the new folder export_dir, in export_format (export_formats.FILES):
    a SavedModel, or model.keras, model.tflite or model.onnx with class_names.txt beside it, each
    computing predict's probabilities from uint8 images (docs/export.md). Whole or not at all.
    Returns the RunConfig of the exported checkpoint."""
    export_formats.check_format(export_format)
    if not export_dir:
        raise RunError('give a new folder to export into', 'export_dir')
    if os.path.exists(export_dir) and not (os.path.isdir(export_dir) and not os.listdir(export_dir)):
        raise RunError(
            f'{export_dir} exists and is not an empty folder; give a new folder (nothing is overwritten)', 'export_dir'
        )
    model, config = load(log_root, checkpoint)
    portable = portable_model.build(model, config.hparams)
    try:
        with atomic_write.staged(export_dir) as staging:
            export_formats.write(portable, config.class_names, staging, export_format)
    except (OSError, tf.errors.OpError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST) and os.path.isdir(export_dir):
            raise RunError(  # another export finished into it meanwhile
                f'{export_dir} was filled by another export while this one ran; nothing was overwritten: '
                'give a new folder',
                'export_dir',
            ) from None
        raise errors.write_failed(export_dir, e) from None
    return config
