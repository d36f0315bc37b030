"""Using a trained run: predict, export, per-class eval results, as a user runs them."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_main, tiny_train_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_main import _assert_user_error

import cifar_input
import resnet_model


@pytest.fixture(scope='module')
def run(subset, tmp_path_factory):
    """A tiny run trained a few steps, evaluated once, and five real test images as PNG files."""
    root = tmp_path_factory.mktemp('use')
    log_root = root / 'run'
    assert run_main(*tiny_train_args(subset, log_root, '--train_steps=30')).returncode == 0
    evaluation = run_main('--mode=eval', '--eval_once', '--log_root', str(log_root))
    assert evaluation.returncode == 0, evaluation.stderr
    images, labels = cifar_input.load_split('cifar10', 'binary', 'test', pattern=os.path.join(subset, 'test_batch.bin'))
    pngs = []
    for i in range(5):
        path = root / f'test_{i}.png'
        path.write_bytes(tf.io.encode_png(images[i]).numpy())
        pngs.append(str(path))
    return {
        'log_root': log_root,
        'root': root,
        'pngs': pngs,
        'images': images[:5].numpy(),
        'labels': labels[:5].numpy(),
    }


def _probabilities_from_checkpoint(log_root, images):
    reader_config = json.loads(
        tf.train.load_checkpoint(str(log_root / 'ckpt-30')).get_tensor('run_config/.ATTRIBUTES/VARIABLE_VALUE')
    )
    model = resnet_model.ResNet(resnet_model.make_hparams(reader_config['hparams'])).build_model()
    tf.train.Checkpoint(model=model).restore(str(log_root / 'ckpt-30')).expect_partial()
    return tf.nn.softmax(model(cifar_input.standardize(tf.constant(images)), training=False)).numpy()


def test_predict_prints_top_classes_of_each_image(run):
    result = run_main(
        '--mode=predict', '--log_root', str(run['log_root']), '--images', ','.join(run['pngs']), '--top_k=3'
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
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
    result = run_main(
        '--mode=predict', '--log_root', str(run['log_root']), '--images', f'{big},{subset}/test_batch.bin', '--top_k=1'
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f'{big}: ')
    assert len([line for line in lines if 'test_batch.bin[' in line]) == 1017
    assert lines[1].endswith('(true: cat)'), 'the first test image is a cat (label 3)'
    assert re.fullmatch(r'precision on the 1017 labelled images: 0\.\d{4}', lines[-1])


def test_predict_names_an_unreadable_file(run):
    bad = run['root'] / 'notes.png'
    bad.write_text('not an image')
    result = run_main('--mode=predict', '--log_root', str(run['log_root']), '--images', f'{run["pngs"][0]},{bad}')
    _assert_user_error(result, 'notes.png', 'cannot read the image')
    result = run_main(
        '--mode=predict', '--log_root', str(run['log_root']), '--images', str(run['root'] / 'missing.png')
    )
    _assert_user_error(result, 'missing.png')


def test_export_reloads_with_the_checkpoints_predictions(run):
    export_dir = run['root'] / 'export'
    result = run_main('--mode=export', '--log_root', str(run['log_root']), '--export_dir', str(export_dir))
    assert result.returncode == 0, result.stderr
    serve = tf.saved_model.load(str(export_dir)).signatures['serving_default']
    outputs = serve(images=tf.constant(run['images']))
    expected = _probabilities_from_checkpoint(run['log_root'], run['images'])
    np.testing.assert_allclose(outputs['probabilities'].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (outputs['class_ids'].numpy() == expected.argmax(axis=1)).all()
    names = cifar_input.CLASS_NAMES['cifar10']
    assert [n.decode() for n in outputs['class_names'].numpy()] == [names[i] for i in expected.argmax(axis=1)]

    again = run_main('--mode=export', '--log_root', str(run['log_root']), '--export_dir', str(export_dir))
    _assert_user_error(again, '--export_dir', 'not empty')


def test_eval_reports_per_class_results_and_a_confusion_image(run):
    metrics = json.load(open(run['log_root'] / 'eval' / 'metrics.json'))
    confusion = np.array(metrics['confusion_matrix'])
    assert confusion.shape == (10, 10) and confusion.sum() == metrics['num_examples'] == 1017
    assert np.trace(confusion) / 1017 == pytest.approx(metrics['precision'])
    per_class = metrics['per_class_precision']
    assert list(per_class) == cifar_input.CLASS_NAMES['cifar10']
    row = confusion[3]
    assert per_class['cat'] == pytest.approx(row[3] / row.sum(), abs=1e-4)
    events = EventAccumulator(str(run['log_root'] / 'eval'), size_guidance={'tensors': 0})
    events.Reload()
    assert 'confusion_matrix' in events.Tags()['tensors']


def test_class_names():
    assert len(cifar_input.CLASS_NAMES['cifar10']) == 10 and len(set(cifar_input.CLASS_NAMES['cifar100'])) == 100
    assert cifar_input.CLASS_NAMES['cifar100'][:3] == ['apple', 'aquarium_fish', 'baby']
    assert cifar_input.CLASS_NAMES['cifar100'][-1] == 'worm'
