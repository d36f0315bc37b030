"""Every file a run reads back, damaged four ways (truncated, empty, of the wrong type, with a wrong
value): one line naming the file and what to do, and the folder left exactly as it was. Then the
values at the edge of what a flag or a key accepts."""

import dataclasses
import json
import os
import shutil

import pytest
import tensorflow as tf
from conftest import as_flags, assert_user_error, folder_contents, run_main, tiny_config

import cifar_input
from resnet_cifar import errors, evaluation, ownership, presets, run_config, run_folder, training
from resnet_cifar.errors import UserError


@pytest.fixture(scope='module')
def evaluated_run(subset, tmp_path_factory):
    """A tiny run of 2 steps evaluated at each: hparams.json, checkpoints, eval/metrics.json and
    eval/history.csv, with an owner record of another running process in a copy of it."""
    config = tiny_config(tmp_path_factory.mktemp('evaluated') / 'run', subset, {'train_steps': 2}, eval_every_steps=1)
    training.train(config, evaluate=True)
    return config


def _halve(text):
    return text[: len(text) // 2]


def _json_edit(edit):
    def damage(text):
        values = json.loads(text)
        edit(values)
        return json.dumps(values)

    return damage


def _set(key, value, within=None):
    return _json_edit(lambda values: (values[within] if within else values).update({key: value}))


OWNER_RECORD = json.dumps({**ownership.this_process('train'), 'pid': 1, 'host': 'another-host'})
HISTORY = 'eval/history.csv'

# (file, how it is damaged, a fragment of the one line)
DAMAGED = [
    ('hparams.json', _halve, 'not valid JSON'),
    ('hparams.json', lambda text: '', 'not valid JSON'),
    ('hparams.json', _set('hparams', [1, 2]), 'hparams: expected a JSON object'),
    ('hparams.json', _set('validation_size', -5, 'data'), 'data.validation_size: expected an integer >= 0'),
    ('hparams.json', _set('validation_size', '5', 'data'), "data.validation_size: expected an integer >= 0, got '5'"),
    ('hparams.json', _set('train_steps', 1e20, 'hparams'), 'train_steps: expected an integer'),
    ('hparams.json', _set('seed', -1, 'data'), 'data.seed: expected an integer from 0'),
    ('owner.json', _halve, 'not valid JSON'),
    ('owner.json', lambda text: '', 'not valid JSON'),
    ('owner.json', lambda text: '"me"', 'expected a JSON object, got a string'),
    ('owner.json', _set('pid', -3), 'pid: expected a positive process id'),
    ('eval/metrics.json', _halve, 'not valid JSON'),
    ('eval/metrics.json', lambda text: '', 'not valid JSON'),
    ('eval/metrics.json', lambda text: '[0.5]', 'expected a JSON object, got a list'),
    ('eval/metrics.json', _set('best_precision', 7), 'best_precision: expected a number from 0 to 1'),
    (HISTORY, lambda text: text[: text.rindex(',')], 'line 3:'),
    (HISTORY, lambda text: text[:-5], 'line 3: cut short'),
    (HISTORY, lambda text: text[: text.rindex(',') + 8] + '\r\n', 'line 3:'),
    (HISTORY, lambda text: '\n', 'line 1: expected the header'),
    (HISTORY, lambda text: '\x00\x01 binary', 'line 1: expected the header'),
    (HISTORY, lambda text: text.replace(text.splitlines()[2].split(',')[2], 'abc'), "line 3: step '2', split"),
]


def _read_back(name, config):
    """What reads `name` back: each mode's first reader of that file."""
    if name == 'hparams.json':
        return run_folder.read_config(config.log_root)
    if name == 'owner.json':
        with ownership.Ownership(config.log_root, 'train', 'log_root'):
            return None
    if name == 'eval/metrics.json':
        return evaluation.evaluate_checkpoints(dataclasses.replace(config, eval_once=True))
    return evaluation.EvalReporter(config, tf.distribute.get_strategy())  # an eval's, which would append to it


def test_a_damaged_history_is_not_appended_to(evaluated_run, copy_run):
    config = copy_run(evaluated_run)
    path = os.path.join(config.eval_folder, evaluation.HISTORY)
    damaged = open(path).read()[:-5]
    with open(path, 'w', newline='') as f:
        f.write(damaged)
    with pytest.raises(UserError, match='line 3: cut short'):
        evaluation.append_history(config.eval_folder, {'step': 3, 'precision': 0.5, 'loss': 1.0, 'checkpoint': 'c'})
    assert open(path, newline='').read() == damaged


@pytest.mark.parametrize(('name', 'damage', 'said'), DAMAGED)
def test_a_damaged_file_gives_one_line_and_leaves_the_folder_as_it_was(evaluated_run, tmp_path, name, damage, said):
    config = dataclasses.replace(evaluated_run, log_root=str(tmp_path / 'run'), train_dir=None, eval_dir=None)
    shutil.copytree(evaluated_run.log_root, config.log_root)
    path = os.path.join(config.log_root, name)
    original = OWNER_RECORD if name == 'owner.json' else open(path).read()
    with open(path, 'w') as f:
        f.write(damage(original))
    before = folder_contents(config.log_root)
    with pytest.raises(UserError) as error:
        _read_back(name, config)
    line = as_flags(error.value)
    assert '\n' not in line and path in line and said in line, line
    assert folder_contents(config.log_root) == before


def test_a_damaged_run_folder_gives_one_line_on_the_command_line(evaluated_run, tmp_path):
    log_root = tmp_path / 'run'
    shutil.copytree(evaluated_run.log_root, log_root)
    with open(log_root / 'hparams.json', 'w') as f:
        f.write('[]')
    assert_user_error(run_main('--mode=eval', '--eval_once', f'--log_root={log_root}'), 'hparams.json: expected')


# The limits of flags and keys.


def test_a_seed_outside_numpys_range_is_refused_by_name():
    for seed in (-1, 2**32, True, '3'):
        with pytest.raises(UserError) as error:
            run_config.data_settings('cifar10', seed=seed)
        assert as_flags(error.value).startswith('--seed: expected an integer from 0 to 4294967295'), seed


def test_a_train_steps_beyond_any_run_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError) as error:
        run_config.new_run(str(tmp_path / 'run'), overrides={'train_steps': 10**20}, data_dir=str(tmp_path))
    assert 'train_steps: expected a positive integer up to 2147483647' in as_flags(error.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ('content', 'said'),
    [
        (b'\x89PNG\r\n\x1a\n\x00\x00binary', 'not a text file'),
        (b'[' * 100000 + b']' * 100000, 'JSON nested too deeply'),
        (b'{"num_residual_units": 2', 'not valid JSON'),
        (b'[2, 3]', 'expected a JSON object, got a list'),
    ],
    ids=['binary', 'deeply nested', 'truncated', 'a list'],
)
def test_a_hparams_file_that_is_no_json_object_gives_one_line(tmp_path, content, said):
    path = tmp_path / 'mine.json'
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        presets.load_preset(str(path))
    line = as_flags(error.value)
    assert line.startswith(f'--hparams: {path}: {said}'), line


def test_a_hparams_folder_is_called_a_folder(tmp_path):
    with pytest.raises(UserError) as error:
        presets.load_preset(str(tmp_path) + os.sep)
    assert 'is a folder' in str(error.value) and 'no such file' not in str(error.value)


def test_a_folder_given_as_an_image_is_called_a_folder(tmp_path):
    with pytest.raises(UserError) as error:
        cifar_input.read_image_files([str(tmp_path)], 'cifar10')
    assert 'is a folder' in str(error.value) and 'no such file' not in str(error.value)


def test_tensorflows_function_node_decorations_stay_out_of_messages():
    with pytest.raises(tf.errors.OpError) as error:
        tf.io.read_file('/nonexistent/file')
    assert '{{function_node' in error.value.message
    assert errors.reason(error.value) == '/nonexistent/file; No such file or directory'


def test_a_folder_without_checkpoints_is_said_in_words_not_flags(tmp_path):
    from resnet_cifar import trained_model

    with pytest.raises(UserError) as error:
        trained_model.load(str(tmp_path))
    line = as_flags(error.value)
    assert 'no --checkpoint' not in line and 'holds no checkpoints' in line and 'with --checkpoint' in line, line
