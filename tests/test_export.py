"""Export: each format, loaded in a fresh process with only its own runtime, gives predict's
probabilities for the real test images; a refused or failed export leaves nothing behind."""

import errno
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_FAST, assert_user_error, run_main, skip_here_fail_in_ci, tiny_config, tiny_hparams
from PIL import Image

import cifar_input
import resnet_model
from resnet_cifar import choices, datasets, export_formats, portable_model, recipe, restore, trained_model, training
from resnet_cifar.errors import UserError

TOLERANCE = 1e-4  # on probabilities; top classes may differ only where predict's top two are this close
PROJECT_MODULES = ('resnet_cifar', 'cifar_input', 'resnet_model', 'resnet_main')
# What each format's fresh process imports, and the few lines that run it: docs/export.md's.
RUNTIMES = {
    'saved_model': 'tensorflow',
    'keras': 'keras',
    'litert': 'ai_edge_litert',
    'onnx': 'onnxruntime',
}
CLIENTS = {
    'saved_model': """
import tensorflow as tf
outputs = tf.saved_model.load(folder).signatures['serving_default'](images=tf.constant(images))
probabilities = outputs['probabilities'].numpy()
class_names = [name.decode() for name in outputs['class_names'].numpy()]
""",
    'keras': """
import keras
model = keras.saving.load_model(f'{folder}/model.keras')  # safe mode: Keras' own layers only
probabilities = model.predict(images, verbose=0)['probabilities']
""",
    'litert': """
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=f'{folder}/model.tflite')
probabilities = interpreter.get_signature_runner()(images=images)['probabilities']
facts['ops'] = sorted({op['op_name'] for op in interpreter._get_ops_details()})
""",
    'onnx': """
import onnxruntime
session = onnxruntime.InferenceSession(f'{folder}/model.onnx')
(probabilities,) = session.run(['probabilities'], {'images': images})
facts['metadata_names'] = json.loads(session.get_modelmeta().custom_metadata_map['class_names'])
""",
}
CLIENT = """
import json, sys
import numpy as np


def answer(folder, images):
    facts, class_names = {{}}, None
{client}
    if class_names is None:  # the file formats: their class_names.txt, in class id order
        names = open(f'{{folder}}/class_names.txt').read().split()
        class_names = [names[i] for i in probabilities.argmax(axis=1)]
    facts['class_names'] = class_names
    return probabilities, facts


images, answers = np.load(sys.argv[1]), []
for folder, output in zip(sys.argv[2::2], sys.argv[3::2], strict=True):
    probabilities, facts = answer(folder, images)
    np.save(output, probabilities)
    answers.append(facts)
loaded = sorted({{name.split('.')[0] for name in sys.modules}} & {{'tensorflow', *{project}}})
print(json.dumps({{'answers': answers, 'loaded': loaded}}))
"""


def _needs(*modules):
    """Skips (fails in CI) when an optional package of the `export` extra is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        skip_here_fail_in_ci(
            f'{", ".join(missing)} not installed: pip install -e ".[export]"', 'CI installs the export extra'
        )


def _trained(root, subset, overrides):
    """A run trained in ROOT/run, the 1,017 real test images, predict's probabilities for them, and
    each format exported once (on first use)."""
    config = tiny_config(root / 'run', subset, overrides)
    training.train(config)
    test_batch = os.path.join(subset, 'test_batch.bin')
    images, _ = cifar_input.read_records([test_batch], 'cifar10')
    np.save(root / 'images.npy', images.numpy())
    exported = {}

    def export(export_format):
        if export_format not in exported:
            exported[export_format] = str(root / export_format)
            trained_model.export(exported[export_format], config.log_root, export_format=export_format)
        return exported[export_format]

    return {
        'config': config,
        'root': root,
        'images': images.numpy(),
        'probabilities': trained_model.predict([test_batch], config.log_root).probabilities,
        'export': export,
    }


@pytest.fixture(scope='module')
def run(subset, tmp_path_factory):
    """A ResNet-8 trained a few steps with a weight average and flip TTA."""
    overrides = {'train_steps': 20, 'ema_decay': 0.9, 'flip_tta': True}
    return _trained(tmp_path_factory.mktemp('export'), subset, overrides)


@pytest.fixture(scope='module')
def fast_run(subset, tmp_path_factory):
    """A narrow airbench network trained a few steps with every speed-run switch: its whitening
    stem, GELU, max-pools, lookahead, and flip and translate TTA."""
    return _trained(tmp_path_factory.mktemp('export_fast'), subset, {**TINY_FAST, 'train_steps': 6})


def _assert_same_answers(probabilities, expected):
    top_two = np.sort(expected, axis=1)[:, -2:]
    near_tie = top_two[:, 1] - top_two[:, 0] < TOLERANCE
    assert ((probabilities.argmax(axis=1) == expected.argmax(axis=1)) | near_tie).all()
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)


def test_the_portable_model_computes_predicts_probabilities_in_float32(run):
    """With and without flip and translate TTA, from a network restored under a mixed-precision policy."""
    checkpoint, hps = os.path.join(run['config'].log_root, 'ckpt-20'), run['config'].hparams
    images = run['images'][:100]
    reference = restore.restore_model(checkpoint, hps)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy('mixed_bfloat16')
    try:
        model = restore.restore_model(checkpoint, hps)
    finally:
        keras.config.set_dtype_policy(previous)
    for flip_tta, translate_tta in ((False, False), (True, False), (False, True), (True, True)):
        portable = portable_model.build(model, hps._replace(flip_tta=flip_tta, translate_tta=translate_tta))
        standardized = cifar_input.standardize(tf.constant(images))
        logits = recipe.inference_logits(reference, standardized, flip_tta, translate_tta)
        np.testing.assert_allclose(portable(images)['probabilities'], tf.nn.softmax(logits), rtol=0, atol=1e-5)
    layers = portable.layers + portable.get_layer('resnet').layers
    assert {layer.dtype_policy.name for layer in layers} == {'float32'}
    assert all(type(layer).__module__.startswith('keras.') for layer in layers), 'no class of this project'


def test_the_portable_model_of_a_bottleneck_network_for_cifar100():
    hps = tiny_hparams(use_bottleneck=True, filters=[16, 64, 128, 256], num_classes=100, flip_tta=True)
    model = resnet_model.ResNet(hps).build_model()
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    expected = tf.nn.softmax(recipe.inference_logits(model, cifar_input.standardize(images), flip_tta=True))
    np.testing.assert_allclose(portable_model.build(model, hps)(images)['probabilities'], expected, rtol=0, atol=1e-5)


@pytest.fixture(scope='module')
def served(run, fast_run):
    """Each format exported from both runs and loaded in one fresh process with only its runtime
    (started once per format): serve(format) gives each run's probabilities and facts, and the
    modules that process loaded."""
    runs, answers = {'run': run, 'fast_run': fast_run}, {}

    def serve(export_format):
        if export_format not in answers:
            outputs = {name: trained['root'] / f'{export_format}.npy' for name, trained in runs.items()}
            folders = [arg for name in runs for arg in (runs[name]['export'](export_format), str(outputs[name]))]
            client = CLIENT.format(client=textwrap.indent(CLIENTS[export_format], '    '), project=PROJECT_MODULES)
            result = subprocess.run(
                [sys.executable, '-c', client, str(run['root'] / 'images.npy'), *folders],
                capture_output=True,
                text=True,
                cwd=run['root'],  # not the checkout: nothing of the project is importable from the folder
                timeout=300,
            )
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout.splitlines()[-1])
            each = {name: (np.load(outputs[name]), facts) for name, facts in zip(runs, report['answers'], strict=True)}
            answers[export_format] = each, report['loaded']
        return answers[export_format]

    return serve


@pytest.mark.slow
@pytest.mark.parametrize('export_format', choices.EXPORT_FORMATS)
@pytest.mark.parametrize('trained', ['run', 'fast_run'])
def test_each_format_runs_in_its_own_runtime_with_predicts_answers(request, served, trained, export_format):
    _needs(RUNTIMES[export_format], *export_formats.NEEDS.get(export_format, ()))
    each, loaded = served(export_format)
    (probabilities, facts), expected = each[trained], request.getfixturevalue(trained)['probabilities']
    _assert_same_answers(probabilities, expected)
    names = datasets.CLASS_NAMES['cifar10']
    assert facts['class_names'] == [names[i] for i in probabilities.argmax(axis=1)]
    assert loaded == ([] if export_format in ('litert', 'onnx') else ['tensorflow'])
    if export_format == 'litert':
        assert not [op for op in facts['ops'] if op.startswith('Flex') or op == 'CUSTOM'], facts['ops']
    if export_format == 'onnx':
        assert facts['metadata_names'] == names


def test_the_saved_model_resizes_other_sizes_as_pil_does(run):
    """Images of another size give the answers of the same images resized by PIL (bilinear,
    antialiased), which docs/export.md promises to within a level of each pixel: close
    probabilities, the same top class wherever it is not a near tie."""
    serve = tf.saved_model.load(run['export']('saved_model')).signatures['serving_default']
    bigger = tf.cast(tf.image.resize(run['images'][:256], [64, 48]), tf.uint8).numpy()
    by_pil = np.stack([np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR)) for image in bigger])
    answers = serve(images=tf.constant(bigger))['probabilities'].numpy()
    expected = serve(images=tf.constant(by_pil))['probabilities'].numpy()
    np.testing.assert_allclose(answers, expected, rtol=0, atol=0.05)
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.05
    assert clear.sum() > 32 and (answers.argmax(axis=1) == expected.argmax(axis=1))[clear].all()


def test_an_export_refuses_what_it_cannot_write_and_leaves_nothing(run, monkeypatch):
    root, log_root = run['root'], run['config'].log_root
    (root / 'full').mkdir()
    (root / 'full' / 'notes.txt').write_text('keep')
    (root / 'a_file').write_text('keep')
    for taken in ('full', 'a_file'):
        with pytest.raises(UserError, match='is not an empty folder') as error:
            trained_model.export(str(root / taken), log_root, export_format='keras')
        assert error.value.key == 'export_dir'
    assert (root / 'full' / 'notes.txt').read_text() == (root / 'a_file').read_text() == 'keep'

    with pytest.raises(UserError, match="expected one of saved_model, keras, litert, onnx, got 'tflite'") as error:
        trained_model.export(str(root / 'new'), log_root, export_format='tflite')
    assert error.value.key == 'export_format'
    monkeypatch.setitem(sys.modules, 'tf2onnx', None)  # as where the export extra is not installed
    with pytest.raises(UserError) as error:
        trained_model.export(str(root / 'new'), log_root, export_format='onnx')
    assert error.value.message.endswith(f'onnx format needs tf2onnx: {choices.install_command("export")}')

    def disk_full_halfway(model, path, *args, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'half a model')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(keras.Model, 'save', disk_full_halfway)
    with pytest.raises(UserError, match='cannot write .*new: No space left on device'):
        trained_model.export(str(root / 'new'), log_root, export_format='keras')
    assert not [name for name in os.listdir(root) if name.startswith('new')], 'no folder and no staging folder'


@pytest.mark.slow
def test_the_command_line_reports_a_failed_write_in_one_line(run):
    root = run['root']
    (root / 'a_file').write_text('keep')
    inside_a_file = f'--export_dir={root}/a_file/export'
    result = run_main('--mode=export', f'--log_root={run["config"].log_root}', inside_a_file, '--export_format=litert')
    assert_user_error(result, f'cannot write {root}/a_file/export', 'Not a directory')
    assert (root / 'a_file').read_text() == 'keep'
