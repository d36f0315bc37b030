"""Using a trained run in-process: predict and export agree with the checkpoint's own model."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

import cifar_input
import resnet_model
from resnet_cifar import run_folder, trained_model, training
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def run(subset, tmp_path_factory):
    """A tiny run trained a few steps, and five real test images as PNG files."""
    root = tmp_path_factory.mktemp('use')
    config = tiny_config(root / 'run', subset, {'train_steps': 30})
    training.train(config)
    images, labels = cifar_input.load_split('cifar10', 'binary', 'test', pattern=os.path.join(subset, 'test_batch.bin'))
    pngs = []
    for i in range(5):
        path = root / f'test_{i}.png'
        path.write_bytes(tf.io.encode_png(images[i]).numpy())
        pngs.append(str(path))
    return {'log_root': config.log_root, 'root': root, 'pngs': pngs, 'images': images[:5].numpy()}


def _probabilities_from_checkpoint(log_root, images):
    path = os.path.join(log_root, 'ckpt-30')
    model = resnet_model.ResNet(run_folder.checkpoint_config(path).hparams).build_model()
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return tf.nn.softmax(model(cifar_input.standardize(tf.constant(images)), training=False)).numpy()


def test_predict_prints_top_classes_of_each_image(run):
    predictions = trained_model.predict(run['pngs'], run['log_root'])
    lines = trained_model.describe(predictions, top_k=3)
    assert len(lines) == 5
    expected = _probabilities_from_checkpoint(run['log_root'], run['images'])
    names = cifar_input.CLASS_NAMES['cifar10']
    for line, path, probs in zip(lines, run['pngs'], expected, strict=True):
        assert line.startswith(f'{path}: ')
        printed = re.findall(r'(\w+) ([\d.]+)', line[len(path) + 2 :])
        assert len(printed) == 3
        best = int(np.argmax(probs))
        assert printed[0] == (names[best], f'{probs[best]:.3f}')
        assert [float(p) for _, p in printed] == sorted((float(p) for _, p in printed), reverse=True)


def test_predict_resizes_other_sizes_and_reads_batch_files(run, subset):
    big = run['root'] / 'big.jpg'
    big.write_bytes(tf.io.encode_jpeg(tf.image.resize(run['images'][:1], [64, 48]).numpy()[0].astype(np.uint8)).numpy())
    predictions = trained_model.predict([str(big), f'{subset}/test_batch.bin'], run['log_root'])
    lines = trained_model.describe(predictions, top_k=1)
    assert lines[0].startswith(f'{big}: ')
    assert len([line for line in lines if 'test_batch.bin[' in line]) == 1017
    assert lines[1].endswith('(true: cat)'), 'the first test image is a cat (label 3)'
    assert re.fullmatch(r'precision on the 1017 labelled images: 0\.\d{4}', lines[-1])


def test_predict_names_an_unreadable_file(run):
    bad = run['root'] / 'notes.png'
    bad.write_text('not an image')
    with pytest.raises(UserError, match='notes.png.*cannot read the image'):
        trained_model.predict([run['pngs'][0], str(bad)], run['log_root'])
    with pytest.raises(UserError, match='missing.png: no such file'):
        trained_model.predict([str(run['root'] / 'missing.png')], run['log_root'])
    with pytest.raises(UserError, match='images: no file matches .*nothing_\\*.png'):
        trained_model.predict([str(run['root'] / 'nothing_*.png')], run['log_root'])


def test_predict_expands_a_quoted_glob(run):
    predictions = trained_model.predict([str(run['root'] / 'test_*.png')], run['log_root'])
    assert predictions.names == sorted(run['pngs'])


def test_export_reloads_with_the_checkpoints_predictions(run):
    export_dir = str(run['root'] / 'export')
    trained_model.export(export_dir, run['log_root'])
    serve = tf.saved_model.load(export_dir).signatures['serving_default']
    outputs = serve(images=tf.constant(run['images']))
    expected = _probabilities_from_checkpoint(run['log_root'], run['images'])
    np.testing.assert_allclose(outputs['probabilities'].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (outputs['class_ids'].numpy() == expected.argmax(axis=1)).all()
    names = cifar_input.CLASS_NAMES['cifar10']
    assert [n.decode() for n in outputs['class_names'].numpy()] == [names[i] for i in expected.argmax(axis=1)]

    bigger = tf.cast(tf.image.resize(run['images'], [64, 48]), tf.uint8)
    resized = _probabilities_from_checkpoint(run['log_root'], cifar_input.resize(bigger).numpy())
    np.testing.assert_allclose(serve(images=bigger)['probabilities'].numpy(), resized, rtol=1e-5, atol=1e-6)

    with pytest.raises(UserError, match='not empty') as error:
        trained_model.export(export_dir, run['log_root'])
    assert error.value.key == 'export_dir'


def test_class_names():
    assert len(cifar_input.CLASS_NAMES['cifar10']) == 10 and len(set(cifar_input.CLASS_NAMES['cifar100'])) == 100
    assert cifar_input.CLASS_NAMES['cifar100'][:3] == ['apple', 'aquarium_fish', 'baby']
    assert cifar_input.CLASS_NAMES['cifar100'][-1] == 'worm'
