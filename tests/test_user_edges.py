"""What a user meets at the edges: errors naming the flag they typed, every value bounded, absl's
flag errors in one line, --help with the command they run, the end-of-run summary, their runs side
by side, the Python API's values, predict's limits, the dtype a run keeps, and the quickstart."""

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import ROOT, as_flags, assert_user_error, run_main, tiny_config

import cifar_input
import resnet_main
from resnet_cifar import presets, run_list, run_summary, trained_model, training
from resnet_cifar.errors import UserError


def _build_config_error(parsed_flags, tmp_path, *args):
    parsed_flags(f'--log_root={tmp_path / "run"}', f'--data_dir={tmp_path}', *args)
    with pytest.raises(UserError) as error:
        resnet_main.build_config('float32')
    return error.value.line(resnet_main.flag_name)


@pytest.mark.parametrize(
    ('args', 'starts', 'also'),
    [
        (
            ['--hparams=airbench94', '--train_steps=4'],
            "--train_steps: preset airbench94's warmup_steps: expected fewer than train_steps (4)",
            '; give warmup_steps too: --hparams_override=warmup_steps=VALUE',
        ),
        (
            ['--hparams=airbench94', '--hparams_override=train_steps=4'],
            "--hparams_override: train_steps: preset airbench94's warmup_steps: expected fewer than train_steps (4)",
            '--hparams_override=warmup_steps=VALUE',
        ),
        (['--train_steps=100000000000000000000'], '--train_steps: expected a positive integer up to 2147483647', ''),
        (
            ['--hparams_override=train_steps=5', '--train_steps=4'],
            '--train_steps: also given in --hparams_override',
            '',
        ),
        (['--hparams_override=batch_size=32,batch_size=16'], '--hparams_override: batch_size is given twice', ''),
        (['--hparams_override=lrn_rate=Infinity'], '--hparams_override: lrn_rate: expected a finite number', ''),
        (['--hparams_override=filters=[16,16,32,1000000]'], '--hparams_override: filters: expected four widths', ''),
        (['--hparams_override=batch_size=10000000'], '--hparams_override: batch_size: expected a positive', ''),
    ],
    ids=[
        'a preset key with a flag',
        'with an override',
        'too many steps',
        'steps twice',
        'a key twice',
        'inf',
        'a width',
        'a batch',
    ],
)
def test_a_refused_value_names_what_the_user_typed(parsed_flags, tmp_path, args, starts, also):
    line = _build_config_error(parsed_flags, tmp_path, *args)
    assert line.startswith(starts) and also in line, line
    assert not (tmp_path / 'run').exists()


def test_a_long_list_is_bounded_and_quoted_short():
    boundaries = list(range(1, 1_000_001))
    with pytest.raises(UserError) as error:
        presets.build_hparams('resnet32', {'lr_boundaries': boundaries})
    line = as_flags(error.value)
    assert 'lr_boundaries: expected up to 100 strictly increasing positive steps' in line
    assert '(1000000 items)' in line and len(line) < 300, line


def test_a_refused_flag_is_one_line_with_exit_code_2(tmp_path):
    result = run_main(f'--log_root={tmp_path}', '--export_format=bogus')
    assert_user_error(
        result, "--export_format: expected one of saved_model, keras, litert, onnx, got 'bogus'", alone=True
    )
    assert_user_error(run_main(f'--log_root={tmp_path}', '--top_k=0'), '--top_k: ', alone=True)
    assert_user_error(run_main(), '--log_root: required', alone=True)


def test_help_shows_the_command_the_user_runs():
    direct = run_main('--help')
    assert direct.returncode == 0 and 'python resnet_main.py --mode=train' in direct.stdout
    module = subprocess.run(
        [sys.executable, '-m', 'resnet_cifar', '--help'], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert module.returncode == 0, module.stderr
    assert 'python -m resnet_cifar --mode=train' in module.stdout and 'python resnet_main.py' not in module.stdout


def test_a_stop_as_the_program_ends_prints_no_traceback(tmp_path):
    """Ctrl-C during Python's shut-down (multiprocessing's atexit callback, after an export)."""
    program = tmp_path / 'program.py'
    program.write_text(
        'import atexit, os, signal, time\n'
        'from absl import flags\n'
        'from resnet_cifar import errors\n'
        'def main(argv):\n'
        '    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))\n'
        "    print('written')\n"
        'errors.run_program(main, flags.FLAGS)\n'
    )
    result = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout == 'written\n'
    assert 'Traceback' not in result.stderr and 'KeyboardInterrupt' not in result.stderr, result.stderr
    assert result.returncode == 0


# A trained run: the summary, the runs list, the Python API, the dtype.


@pytest.fixture(scope='module')
def evaluated(subset, tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp('runs') / 'a', subset, {'train_steps': 2}, eval_every_steps=2)
    training.train(config, evaluate=True)
    return config


def test_the_summary_says_precision_time_and_where_the_files_are(evaluated):
    lines = run_summary.lines(evaluated, 2, 3725)
    root = evaluated.log_root
    assert lines[0] == f'summary: {root} at step 2 of 2 after 1:02:05 (this command); checkpoint {root}/ckpt-2'
    metrics = json.load(open(os.path.join(root, 'eval', 'metrics.json')))
    assert lines[1] == (
        f'summary: test precision {metrics["precision"]:.4f} at step 2 (the last eval), best '
        f'{metrics["best_precision"]:.4f}; report {root}/eval/metrics.json, every eval in {root}/eval/history.csv'
    )


def test_a_damaged_eval_report_is_named_in_the_summary_not_an_error(evaluated, copy_run):
    config = copy_run(evaluated)
    with open(os.path.join(config.eval_folder, 'history.csv'), 'a') as f:
        f.write('3,test,0.5')
    lines = run_summary.lines(config, 2, 1)
    assert lines[1].startswith(f'summary: no eval to report: {config.eval_folder}/history.csv: line 3: cut short')


def test_the_start_up_line_names_what_makes_the_network_another_than_the_presets(evaluated):
    assert evaluated.origin() == 'preset resnet32 with num_residual_units=1'
    assert dataclasses.replace(evaluated, hparams=presets.load_preset('resnet32')).origin() == 'preset resnet32'


def test_the_runs_of_a_folder_are_listed_and_compared(evaluated, tmp_path):
    root = tmp_path / 'runs'
    shutil.copytree(evaluated.log_root, root / 'a')
    shutil.copytree(evaluated.log_root, root / 'nested' / 'b')
    shutil.copytree(evaluated.log_root, root / 'damaged')
    (root / 'damaged' / 'eval' / 'metrics.json').write_text('{')
    runs = run_list.find_runs(str(root))
    assert runs == [str(root / 'a'), str(root / 'damaged'), str(root / 'nested' / 'b')]
    best = json.load(open(os.path.join(evaluated.log_root, 'eval', 'metrics.json')))['best_precision']
    table = run_list.table(runs).splitlines()
    assert table[2].startswith(f'| {root / "a"} | cifar10, preset resnet32 with num_residual_units=1 | 2 of 2 |')
    assert f'| {best:.4f} (2) | {best:.4f} | 0:00:' in table[2]
    assert f'{root / "damaged"}/eval/metrics.json: not valid JSON' in table[3]
    text = run_list.compare([str(root / 'a'), str(root / 'nested' / 'b')])
    assert f'| best_precision | {best:.4f} (1) | {best:.4f} (1) | +0.0000 (no SE: one run) |' in text
    with pytest.raises(UserError, match='metrics.json: not valid JSON'):
        run_list.compare([str(root / 'a'), str(root / 'damaged')])


def test_load_is_a_named_model_and_config(evaluated):
    loaded = trained_model.load(evaluated.log_root)
    model, config = loaded
    assert loaded.model is model and loaded.config == config and config.hparams == evaluated.hparams


def test_an_export_that_finds_its_folder_taken_says_so(evaluated, tmp_path, monkeypatch):
    target = tmp_path / 'exported'

    def the_other_export_finishes_first(portable, class_names, folder, export_format):
        os.makedirs(folder)
        open(os.path.join(folder, 'model.keras'), 'w').close()
        target.mkdir()
        (target / 'model.keras').write_text('the other export')

    monkeypatch.setattr(trained_model.export_formats, 'write', the_other_export_finishes_first)
    with pytest.raises(UserError) as error:
        trained_model.export(str(target), evaluated.log_root, export_format='keras')
    line = as_flags(error.value)
    assert line.startswith(f'--export_dir: {target} was filled by another export') and 'free space' not in line
    assert os.listdir(target) == ['model.keras'] and (target / 'model.keras').read_text() == 'the other export'
    assert sorted(os.listdir(tmp_path)) == ['exported']  # the loser's staging folder is gone


def test_the_dtype_is_recorded_and_a_resume_in_another_is_refused(evaluated, copy_run):
    assert json.load(open(os.path.join(evaluated.log_root, 'hparams.json')))['dtype'] == 'float32'
    config = copy_run(evaluated)
    before = sorted(os.listdir(config.log_root))
    with pytest.raises(UserError) as error:
        training.train(dataclasses.replace(config, dtype='bfloat16', hparams=config.hparams._replace(train_steps=3)))
    line = as_flags(error.value)
    assert line.startswith('--dtype: cannot resume in bfloat16:') and 'resume with --dtype=float32' in line, line
    assert sorted(os.listdir(config.log_root)) == before


# Predict.


def test_predictions_print_short_and_can_be_limited():
    predictions = trained_model.Predictions(
        ['a[0]', 'a[1]', 'a[2]'], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 0, 0], ['cat', 'dog']
    )
    assert repr(predictions) == '<Predictions of 3 images (3 labelled) over 2 classes>'
    lines = trained_model.describe(predictions, top_k=1, max_images=1)
    assert lines == [
        'a[0]: cat 0.900 (true: cat)',
        '... and 2 more images',
        'precision on the 3 labelled images: 0.6667',
    ]


def _png_header_only(path, width, height):
    """A small PNG file declaring `width` x `height` pixels."""

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64)))


@pytest.mark.parametrize(('size', 'said'), [(9000, '9000x9000 pixels'), (20000, 'more than 178 megapixels')])
def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path, size, said):
    path = tmp_path / 'big.png'
    _png_header_only(path, size, size)
    with pytest.raises(UserError) as error:
        cifar_input.read_image_files([str(path)], 'cifar10')
    assert as_flags(error.value) == (
        f'{path}: {said} is more than the 50 megapixels predict decodes; shrink it first '
        '(it is resized to 32x32 anyway)'
    )


@pytest.mark.parametrize('content', [b'', b'not an image'])
def test_an_unreadable_image_is_said_without_tensorflows_decorations(tmp_path, content):
    path = tmp_path / 'x.png'
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        cifar_input.read_image_files([str(path)], 'cifar10')
    line = as_flags(error.value)
    assert line.startswith(f'{path}: cannot read the image (') and '{{' not in line and '[Op:' not in line, line


# The quickstart and the download, without a connection.


def _fake_python(folder, installed):
    """A virtual environment whose python records its arguments; `-P` (quickstart's check whether the
    project is installed) answers `installed`."""
    (folder / 'bin').mkdir(parents=True)
    python = folder / 'bin' / 'python'
    python.write_text(
        f'#!/bin/sh\necho "$@" >> {folder}/calls\nif [ "$1" = "-P" ]; then exit {0 if installed else 1}; fi\nexit 0\n'
    )
    python.chmod(0o755)
    return folder / 'calls'


@pytest.mark.parametrize('installed', [True, False])
def test_the_quickstart_installs_only_when_needed_into_the_environment_it_names(tmp_path, installed):
    calls = _fake_python(tmp_path / 'venv', installed)
    env = {**os.environ, 'VIRTUAL_ENV': str(tmp_path / 'venv')}
    result = subprocess.run(
        ['bash', os.path.join(ROOT, 'scripts', 'quickstart.sh'), '--data_dir=DIR', '--train_steps=300'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f'using the active virtual environment {tmp_path / "venv"}' in result.stdout
    lines = calls.read_text().splitlines()
    assert lines[0].startswith('-P -c ')
    pip = [line for line in lines if line.startswith('-m pip install')]
    assert pip == ([] if installed else ['-m pip install -q -r requirements.txt -e .'])
    train = 'resnet_main.py --mode=train_and_eval --log_root=runs/quickstart --data_dir=data'
    assert lines[-1] == f'{train} --data_dir=DIR --train_steps=300'


OFFLINE = (
    'import runpy, socket, sys\n'
    'def offline(*args, **kwargs):\n'
    "    raise socket.gaierror(-2, 'Name or service not known')\n"
    'socket.getaddrinfo = offline\n'
    "sys.argv = ['scripts/download_cifar.py', *sys.argv[1:]]\n"
    "runpy.run_path('scripts/download_cifar.py', run_name='__main__')\n"
)


def test_the_download_offline_says_where_to_put_an_archive_fetched_elsewhere(tmp_path):
    result = subprocess.run(
        [sys.executable, '-c', OFFLINE, f'--data_dir={tmp_path}'], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    archive = tmp_path / 'cifar-10-binary.tar.gz'
    assert_user_error(
        result,
        'cannot download https://',
        f'put it at {archive}, then run this again',
        '--data_source=tfds',
        alone=True,
    )
    assert os.listdir(tmp_path) == []
    archive.write_bytes(b'not the archive')
    result = subprocess.run(
        [sys.executable, '-c', OFFLINE, f'--data_dir={tmp_path}'], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert_user_error(result, f'{archive}: not the archive of https://', 'fetch it again')
    assert os.listdir(tmp_path) == ['cifar-10-binary.tar.gz']
