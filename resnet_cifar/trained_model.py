"""Using a trained model: class probabilities for image files, and a SavedModel export.

The checkpoint says which network it holds, so neither needs the run's settings repeated.
"""

import collections
import os
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import recipe, run_folder
from resnet_cifar.run_folder import RunError

Predictions = collections.namedtuple('Predictions', 'names probabilities labels class_names')


def load(log_root=None, checkpoint=None):
    """The Keras model of `checkpoint`, or of the newest readable checkpoint in log_root, and the
    RunConfig it was trained with."""
    if checkpoint:
        problem = run_folder.checkpoint_problem(checkpoint)
        if problem:
            raise RunError(problem, 'checkpoint')
        path = checkpoint
    else:
        paths = run_folder.checkpoints(log_root)
        if not paths:
            raise RunError(f'no checkpoint in {log_root}; train first, or pass checkpoint', 'log_root', ['checkpoint'])
        path = next(run_folder.usable(paths, 'use it'), None)
        if path is None:
            raise RunError(f'no readable checkpoint in {log_root}', 'log_root')
    config = run_folder.checkpoint_config(path)
    model = resnet_model.ResNet(config.hparams).build_model()
    recipe.restore_for_inference(path, model).assert_existing_objects_matched()
    logging.info('using %s', path)
    return model, config


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
            tf.nn.softmax(recipe.inference_logits(model, cifar_input.standardize(batch), config.hparams.flip_tta))
            for batch in tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        ],
        axis=0,
    ).numpy()
    names, _, labels = zip(*examples, strict=True)
    return Predictions(list(names), probabilities, list(labels), config.class_names)


def describe(predictions, top_k=3):
    """One line per image, its top classes with their probabilities (and its label, if known),
    then the precision over the labelled ones."""
    lines, right = [], 0
    class_names = predictions.class_names
    for name, probs, label in zip(predictions.names, predictions.probabilities, predictions.labels, strict=True):
        top = np.argsort(-probs)[:top_k]
        line = f'{name}: ' + ', '.join(f'{class_names[i]} {probs[i]:.3f}' for i in top)
        if label is not None:
            line += f' (true: {class_names[label]})'
            right += int(top[0] == label)
        lines.append(line)
    labelled = sum(label is not None for label in predictions.labels)
    if labelled:
        lines.append(f'precision on the {labelled} labelled images: {right / labelled:.4f}')
    return lines


def export(export_dir, log_root=None, checkpoint=None):
    """Writes a SavedModel: uint8 images [N, H, W, 3] in (resized to 32x32 as predict does), class
    probabilities, ids and names out.
    Returns the RunConfig of the exported checkpoint."""
    if not export_dir:
        raise RunError('give a new folder for the SavedModel', 'export_dir')
    if os.path.exists(export_dir) and os.listdir(export_dir):
        raise RunError(f'{export_dir} is not empty; give a new folder (nothing is overwritten)', 'export_dir')
    model, config = load(log_root, checkpoint)
    module = tf.Module()
    module.model = model
    module.class_names = tf.constant(config.class_names)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')])
    def serve(images):
        """Resized to 32x32 as predict does, the trainer's eval preprocessing, the network (with
        flip_tta, averaged with the mirror image's logits), a softmax."""
        images = tf.cond(tf.reduce_all(tf.shape(images)[1:3] == 32), lambda: images, lambda: cifar_input.resize(images))
        logits = recipe.inference_logits(model, cifar_input.standardize(images), config.hparams.flip_tta)
        probabilities = tf.nn.softmax(logits)
        class_ids = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return {
            'probabilities': probabilities,
            'class_ids': class_ids,
            'class_names': tf.gather(module.class_names, class_ids),
        }

    module.serve = serve
    staging = f'{os.path.normpath(export_dir)}.tmp-{os.getpid()}'  # a failed export leaves no half folder
    try:
        tf.saved_model.save(module, staging, signatures={'serving_default': serve})
        os.replace(staging, export_dir)
    except OSError as e:
        raise RunError(f'cannot write {export_dir}: {e.strerror}', 'export_dir') from None
    finally:  # failed or interrupted: no half folder stays
        shutil.rmtree(staging, ignore_errors=True)
    return config
