"""Writes a portable model (portable_model.py) into a new folder, in one of four formats: a
SavedModel, a Keras file, a LiteRT (TFLite) file or an ONNX file. docs/export.md says what each
takes in and gives out, and how to call it."""

import importlib.util
import json
import logging
import os
import warnings

import numpy as np
import tensorflow as tf

import cifar_input
from resnet_cifar import choices
from resnet_cifar.errors import RunError

# Each of choices.EXPORT_FORMATS, with its file in the folder (a SavedModel is the folder itself),
# and what writing it needs beyond TensorFlow and Keras: the `export` extra of pyproject.toml.
FILES = {'saved_model': None, 'keras': 'model.keras', 'litert': 'model.tflite', 'onnx': 'model.onnx'}
NEEDS = {'onnx': ('tf2onnx', 'onnx')}
CLASS_NAMES_FILE = 'class_names.txt'  # beside a file format's model: the class names, in class id order
IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.uint8, name='images')


def check_format(export_format):
    """Refuses a format this module does not write, or whose converter is not installed."""
    if export_format not in choices.EXPORT_FORMATS:
        raise RunError(f'expected one of {", ".join(choices.EXPORT_FORMATS)}, got {export_format!r}', 'export_format')
    missing = [name for name in NEEDS.get(export_format, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise RunError(
            f'the {export_format} format needs {" and ".join(missing)}: {choices.install_command("export")}',
            'export_format',
        )


def _saved_model(portable, class_names, folder):
    """A SavedModel whose serving_default takes uint8 images of any size, resized to 32x32 as
    predict resizes them, and returns probabilities, class ids and class names."""
    module = tf.Module()
    module.model = portable
    module.class_names = tf.constant(class_names)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')])
    def serve(images):
        images = tf.cond(tf.reduce_all(tf.shape(images)[1:3] == 32), lambda: images, lambda: cifar_input.resize(images))
        probabilities = portable(tf.ensure_shape(images, IMAGES.shape))['probabilities']
        class_ids = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return {
            'probabilities': probabilities,
            'class_ids': class_ids,
            'class_names': tf.gather(module.class_names, class_ids),
        }

    module.serve = serve
    tf.saved_model.save(module, folder, signatures={'serving_default': serve})


def _litert(portable, path):
    """Built-in ops only: the converter fails rather than add Select TF ops, which LiteRT's
    interpreter runs only with the Flex delegate linked in."""
    portable.export(
        path,
        format='litert',
        input_signature=[IMAGES],
        verbose=False,
        target_spec={'supported_ops': [tf.lite.OpsSet.TFLITE_BUILTINS]},
    )


def _register_erfc():
    """Teaches tf2onnx TensorFlow's Erfc, which it lacks and exact GELU (tf.nn.gelu, the airbench
    network's activation) computes with: as 1 - Erf, ONNX's own op since opset 9. Registered with
    tf2onnx's handler decorator, as its built-in conversions are."""
    from tf2onnx import handler, utils

    @handler.tf_op('Erfc')
    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            (x,) = node.input
            erf = ctx.make_node('Erf', [x])
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(x))
            one = ctx.make_const(utils.make_name(f'{node.name}_one'), np.array(1, dtype))
            node.type = 'Sub'
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _onnx(portable, path, class_names):
    """Through tf2onnx (Keras' exporter), with the class names in the model's metadata."""
    import onnx

    _register_erfc()
    logging.getLogger('tf2onnx').setLevel(logging.WARNING)  # its INFO lines narrate the conversion
    with warnings.catch_warnings():  # Keras' tf2onnx patch warns about NumPy's np.object
        warnings.simplefilter('ignore', FutureWarning)
        portable.export(path, format='onnx', input_signature=[IMAGES], verbose=False)
    model = onnx.load(path)
    try:  # tf2onnx leaves ops it cannot express in the graph
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first_line = str(e).strip().splitlines()[0]
        raise RunError(
            f'ONNX cannot hold this network ({first_line}); export another format', 'export_format'
        ) from None
    onnx.helper.set_model_props(model, {'class_names': json.dumps(class_names)})
    onnx.save(model, path)


def write(portable, class_names, folder, export_format):
    """Writes `portable` in `export_format` into `folder`, a path that does not exist yet: a
    SavedModel folder, or a folder with the model's file and class_names.txt. Raises OSError or
    TensorFlow's OpError when the disk or the folder refuses."""
    check_format(export_format)
    if export_format == 'saved_model':
        _saved_model(portable, class_names, folder)
        return
    os.makedirs(folder)
    path = os.path.join(folder, FILES[export_format])
    if export_format == 'keras':
        portable.save(path)
    elif export_format == 'litert':
        _litert(portable, path)
    else:
        _onnx(portable, path, class_names)
    with open(os.path.join(folder, CLASS_NAMES_FILE), 'w') as f:
        f.write(''.join(f'{name}\n' for name in class_names))
