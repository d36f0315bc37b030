"""Using a trained run in-process: load and predict give the checkpoint's own model's answers, and
predict reads image files as a client using PIL does."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

import cifar_input
import resnet_model
from resnet_cifar import checkpoint_index, datasets, recipe, trained_model, training
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
    model = resnet_model.ResNet(checkpoint_index.checkpoint_config(path).hparams).build_model()
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return tf.nn.softmax(model(cifar_input.standardize(tf.constant(images)), training=False)).numpy()


def test_predict_prints_top_classes_of_each_image(run):
    predictions = trained_model.predict(run['pngs'], run['log_root'])
    lines = trained_model.describe(predictions, top_k=3)
    assert len(lines) == 5
    expected = _probabilities_from_checkpoint(run['log_root'], run['images'])
    names = datasets.CLASS_NAMES['cifar10']
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


def test_load_gives_the_network_and_how_predict_calls_it(run):
    model, config = trained_model.load(run['log_root'])
    standardized = cifar_input.standardize(tf.constant(run['images']))
    probabilities = tf.nn.softmax(recipe.inference_logits(model, standardized, config.hparams.flip_tta))
    np.testing.assert_allclose(probabilities, trained_model.predict(run['pngs'], run['log_root']).probabilities)
    assert config.class_names == datasets.CLASS_NAMES['cifar10'] and config.log_root == run['log_root']


def test_predict_decodes_and_resizes_a_jpeg_as_pil_does(run):
    """A client reading the file with PIL gets predict's pixels: the same decoded ones (the
    accurate DCT, not TensorFlow's default fast one), and resized ones within one level."""
    bigger = tf.image.resize(run['images'], [96, 80], method='bicubic')
    for i, pixels in enumerate(tf.cast(tf.clip_by_value(tf.round(bigger), 0, 255), tf.uint8).numpy()):
        path = run['root'] / f'photo_{i}.jpg'
        Image.fromarray(pixels).save(path, quality=75)  # PIL's defaults: 4:2:0 chroma subsampling
        pil = Image.open(path).convert('RGB')
        decoded = cifar_input.decode_image(path.read_bytes()).numpy()
        assert np.array_equal(decoded, np.asarray(pil))
        assert not np.array_equal(tf.io.decode_jpeg(path.read_bytes()).numpy(), decoded), 'the DCTs differ here'
        [(_, resized, _)] = cifar_input.read_image_files([str(path)], 'cifar10')
        pil_resized = np.asarray(pil.resize((32, 32), Image.BILINEAR)).astype(int)
        assert np.abs(resized.numpy().astype(int) - pil_resized).max() <= 1


def test_class_names():
    assert len(datasets.CLASS_NAMES['cifar10']) == 10 and len(set(datasets.CLASS_NAMES['cifar100'])) == 100
    assert datasets.CLASS_NAMES['cifar100'][:3] == ['apple', 'aquarium_fish', 'baby']
    assert datasets.CLASS_NAMES['cifar100'][-1] == 'worm'
