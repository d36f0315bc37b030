"""resnet_main.py end to end, run as a user runs it, on the real CIFAR-10 subset."""

import json
import os

import pytest
from conftest import TINY_OVERRIDE, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _tags(directory):
    events = EventAccumulator(directory, size_guidance={'tensors': 0, 'images': 0})
    events.Reload()
    return set(events.Tags()['tensors']) | set(events.Tags()['images'])


def _assert_user_error(result, *fragments):
    """A user mistake: non-zero exit, one 'error:' line naming the problem, no traceback."""
    assert result.returncode != 0, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope='module')
def trained_run(subset, tmp_path_factory):
    """Trains a tiny ResNet 6 steps, then resumes it to 10: the run the other tests inspect."""
    log_root = str(tmp_path_factory.mktemp('run'))
    common = ['--data_dir', subset, '--log_root', log_root, '--summary_every_steps=2', '--checkpoint_every_steps=4']
    first = run_main('--mode=train', f'--hparams_override={TINY_OVERRIDE}', '--train_steps=6', *common)
    assert first.returncode == 0, first.stderr
    checkpoints_after_first = sorted(f for f in os.listdir(log_root) if f.endswith('.index'))
    second = run_main('--mode=train', '--train_steps=10', '--log_root', log_root, '--summary_every_steps=2')
    assert second.returncode == 0, second.stderr
    return {'log_root': log_root, 'first': first, 'second': second, 'checkpoints_after_first': checkpoints_after_first}


def test_train_stops_at_train_steps_with_a_checkpoint_there(trained_run):
    assert trained_run['checkpoints_after_first'] == ['ckpt-4.index', 'ckpt-6.index']
    assert 'total_params: ' in trained_run['first'].stdout
    saved = json.load(open(os.path.join(trained_run['log_root'], 'hparams.json')))
    assert saved['dataset'] == 'cifar10' and saved['hparams']['num_residual_units'] == 1


def test_second_run_resumes_without_repeating_flags(trained_run):
    second = trained_run['second'].stderr
    assert 'resumed from' in second and 'ckpt-6' in second
    assert 'from step 6 to 10' in second
    assert os.path.exists(os.path.join(trained_run['log_root'], 'ckpt-10.index'))
    saved = json.load(open(os.path.join(trained_run['log_root'], 'hparams.json')))
    assert saved['hparams']['train_steps'] == 10 and saved['hparams']['batch_size'] == 32


def test_training_summaries_hold_the_original_tags(trained_run):
    tags = _tags(os.path.join(trained_run['log_root'], 'train'))
    expected = {'cost', 'xent', 'weight_decay', 'learning_rate', 'Precision', 'images/sec', 'images'}
    assert expected <= tags


def test_eval_once_covers_the_whole_test_set(trained_run, subset):
    log_root = trained_run['log_root']
    result = run_main('--mode=eval', '--log_root', log_root, '--eval_once', '--eval_batch_size=100')
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(log_root, 'eval', 'metrics.json')))
    assert metrics['num_examples'] == 1017 and metrics['step'] == 10
    assert metrics['checkpoint'].endswith('ckpt-10')
    assert 0.0 <= metrics['precision'] <= metrics['best_precision'] <= 1.0 and metrics['loss'] > 0
    assert {'Precision', 'Best Precision', 'loss'} <= _tags(os.path.join(log_root, 'eval'))


def test_continuous_eval_stops_after_the_final_checkpoint(trained_run):
    result = run_main(
        '--mode=eval',
        '--log_root',
        trained_run['log_root'],
        '--eval_dir',
        os.path.join(trained_run['log_root'], 'eval2'),
        '--eval_timeout_secs=60',
    )
    assert result.returncode == 0, result.stderr
    assert 'eval at step 10' in result.stderr


def test_resume_with_another_architecture_is_refused(trained_run):
    before = sorted(os.listdir(trained_run['log_root']))
    result = run_main('--mode=train', '--log_root', trained_run['log_root'], '--hparams=resnet110')
    _assert_user_error(result, 'holds a run of preset resnet32', 'num_residual_units=1', 'resnet110')
    assert sorted(os.listdir(trained_run['log_root'])) == before


def test_train_and_eval_writes_metrics(subset, tmp_path):
    result = run_main(
        '--mode=train_and_eval',
        '--data_dir',
        subset,
        '--log_root',
        str(tmp_path),
        f'--hparams_override={TINY_OVERRIDE}',
        '--train_steps=4',
        '--eval_every_steps=2',
        '--validation_size=100',
        '--eval_split=validation',
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count('eval at step') == 2
    metrics = json.load(open(tmp_path / 'eval' / 'metrics.json'))
    assert metrics['num_examples'] == 100 and metrics['step'] == 4


def test_eval_without_a_checkpoint_gives_up_after_the_timeout(tmp_path):
    result = run_main('--mode=eval', '--log_root', str(tmp_path), '--data_source=synthetic', '--eval_timeout_secs=1')
    _assert_user_error(result, 'no usable checkpoint appeared', '--eval_timeout_secs')


@pytest.mark.parametrize(
    'args, fragments',
    [
        (['--train_data_path=/nonexistent/data_batch_*.bin'], ['--train_data_path', '/nonexistent/data_batch_*.bin']),
        (['--hparams=resnet33'], ["unknown preset 'resnet33'"]),
        (['--hparams_override=dropout=0.5'], ["unknown hparam 'dropout'"]),
        (['--hparams_override=lr_boundaries=[9,3]'], ['lr_boundaries', 'increasing']),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, fragments):
    result = run_main('--mode=train', '--log_root', str(tmp_path / 'run'), *args)
    _assert_user_error(result, *fragments)


def test_truncated_data_file_is_named(tmp_path):
    (tmp_path / 'data_batch_1.bin').write_bytes(b'\0' * 5000)
    result = run_main('--mode=train', '--data_dir', str(tmp_path), '--log_root', str(tmp_path / 'run'))
    _assert_user_error(result, 'data_batch_1.bin', '5000 bytes', '3073-byte')


def test_default_preset_trains_on_synthetic_data(tmp_path):
    result = run_main('--mode=train', '--data_source=synthetic', '--log_root', str(tmp_path), '--train_steps=2')
    assert result.returncode == 0, result.stderr
    assert 'total_params: 464154' in result.stdout
    assert os.path.exists(tmp_path / 'ckpt-2.index')
