"""Which dtype a run is told or picks, from measurements faked or cached: the start-up hint (bfloat16
measured faster, slower, nothing cached, a damaged cache), --dtype=auto, and float16 on a CPU."""

import datetime
import json
import logging
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
from conftest import assert_user_error, run_main, run_script, tiny_hparams

from resnet_cifar import dtype_speed, machine

GENOA = {**machine.describe_cpu('model name\t: AMD EPYC 9B14\nflags\t\t: avx2 avx512f avx512_bf16\n')}
GENOA.update(cpus=2, intra_op_threads=0, inter_op_threads=0, gpus=[], hidden_gpus=0)
ROME = {**GENOA, **machine.describe_cpu('model name\t: AMD EPYC 7B12\nflags\t\t: avx2\n')}
DAY = datetime.date(2026, 12, 2)
NOT_MEASURED = 'this CPU has AVX512_BF16; bfloat16 may train faster, not measured here: --dtype=auto measures once'


def _flag(key):
    return f'--{key}'


def _key(described=GENOA):
    return dtype_speed.machine_key(described, tf.__version__)


def _record(bfloat16, float32=300.0):
    return {'images_per_sec': {'float32': float32, 'bfloat16': bfloat16}, 'measured': DAY.isoformat()}


@pytest.mark.parametrize(
    'record, expected',
    [
        (
            _record(480.0),
            'bfloat16 trained resnet32 1.6 times as fast as float32 on this machine (measured 2026-12-02): '
            '--dtype=bfloat16 or --dtype=auto',
        ),
        (_record(243.0), None),  # slower, as on the Intel Xeon of docs/performance.md: float32 is right
        (_record(315.0), None),  # within MARGIN: not worth recommending
        (None, NOT_MEASURED),
        ({'images_per_sec': {'float32': 300.0}, 'measured': '2026-12-02'}, NOT_MEASURED),  # bfloat16 never measured
    ],
)
def test_the_hint_says_what_was_measured_here(record, expected):
    assert dtype_speed.hint(GENOA, 'float32', True, True, lambda: record, _flag) == expected


def test_no_hint_where_bfloat16_is_no_question_and_no_cache_read_for_it():
    def unread():
        raise AssertionError('the cache is read only where the hint may be given')

    for described, dtype, on_cpu, onednn in (
        (GENOA, 'bfloat16', True, True),  # asked for already
        (GENOA, 'float16', True, True),
        (GENOA, 'float32', False, True),  # on GPUs
        (GENOA, 'float32', True, False),  # TensorFlow's Eigen kernels: no bfloat16 arithmetic
        (ROME, 'float32', True, True),  # AVX2 only
    ):
        assert dtype_speed.hint(described, dtype, on_cpu, onednn, unread) is None


def test_a_measurement_is_cached_per_machine_whole_and_read_back(tmp_path):
    written = dtype_speed.write_measurement(_key(), {'float32': 300.0, 'bfloat16': 480.0}, tmp_path, DAY)
    assert os.listdir(tmp_path) == [os.path.basename(dtype_speed.cache_path(_key(), tmp_path))], 'no staging left'
    assert dtype_speed.read_measurement(_key(), tmp_path) == written
    assert written['images_per_sec'] == {'float32': 300.0, 'bfloat16': 480.0} and written['measured'] == '2026-12-02'
    for other in ({**GENOA, 'cpus': 4}, {**GENOA, 'avx512_bf16': False}, ROME):
        assert dtype_speed.read_measurement(_key(other), tmp_path) is None, 'another machine measured nothing'
    assert dtype_speed.machine_key(GENOA, '2.99.0') != _key(), 'nor another TensorFlow'
    assert dtype_speed.machine_key(GENOA, tf.__version__, {'TF_ENABLE_ONEDNN_OPTS': '0'}) != _key()


def test_the_cache_is_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert dtype_speed.cache_path(_key()).startswith(str(tmp_path / 'resnet-cifar') + os.sep)
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert dtype_speed.cache_folder() == str(tmp_path / 'home' / '.cache' / 'resnet-cifar')


@pytest.mark.parametrize(
    'content, says',
    [
        (lambda key: b'{"format": 1, "machine": ', 'not valid JSON'),
        (lambda key: b'\x80\x81\x82', 'not a text file'),
        (lambda key: b'[1, 2]', 'expected a JSON object'),
        (lambda key: _json(machine='another', measured='x', images_per_sec={'float32': 1}), 'machine'),
        (lambda key: _json(machine=key, measured='x', images_per_sec={'float32': -3}), 'images_per_sec'),
    ],
)
def test_a_damaged_cache_is_one_warning_and_not_measured(tmp_path, caplog, content, says):
    path = dtype_speed.cache_path(_key(), tmp_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(content(_key()))
    caplog.set_level(logging.WARNING, logger='absl')
    assert dtype_speed.hint(GENOA, 'float32', True, True, lambda: dtype_speed.read_measurement(_key(), tmp_path)) == (
        NOT_MEASURED.replace('--dtype', 'dtype')
    )
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f'{path}: '), warnings
    assert says in warnings[0] and 'treated as not measured' in warnings[0], warnings[0]


def _json(**values):
    return json.dumps({'format': dtype_speed.CACHE_FORMAT, **values}).encode()


class FakeMeasure:
    """measure() as --dtype=auto calls it, with rates given and the calls counted."""

    def __init__(self, rates):
        self.rates, self.calls = rates, []

    def __call__(self, dtypes):
        self.calls.append(list(dtypes))
        return {dtype: self.rates[dtype] for dtype in dtypes}


@pytest.mark.parametrize('bfloat16, chosen', [(480.0, 'bfloat16'), (243.0, 'float32'), (315.0, 'float32')])
def test_auto_measures_once_then_reads_the_cache(tmp_path, bfloat16, chosen):
    fake = FakeMeasure({'float32': 300.0, 'bfloat16': bfloat16})
    first = dtype_speed.choose(GENOA, True, True, _key(), tmp_path, fake)
    again = dtype_speed.choose(GENOA, True, True, _key(), tmp_path, fake)
    assert first[0] == again[0] == chosen
    assert fake.calls == [['float32', 'bfloat16']], 'measured the first time only'
    assert f'float32 300, bfloat16 {bfloat16:g}' in again[1] and again[1].startswith(f'dtype auto: {chosen} ')


def test_auto_measures_nothing_where_only_float32_computes_natively(tmp_path):
    fake = FakeMeasure({})
    assert dtype_speed.choose(ROME, True, True, _key(ROME), tmp_path, fake)[0] == 'float32'
    assert dtype_speed.choose(GENOA, True, False, _key(), tmp_path, fake)[0] == 'float32'  # oneDNN off
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_auto_measures_again_over_a_damaged_cache(tmp_path, caplog):
    path = dtype_speed.cache_path(_key(), tmp_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('{"truncated": ')
    fake = FakeMeasure({'float32': 300.0, 'bfloat16': 480.0})
    assert dtype_speed.choose(GENOA, True, True, _key(), tmp_path, fake)[0] == 'bfloat16'
    assert fake.calls == [['float32', 'bfloat16']]
    assert dtype_speed.read_measurement(_key(), tmp_path)['images_per_sec']['bfloat16'] == 480.0, 'replaced'


def test_auto_sets_the_policy_from_the_cache_and_float16_on_a_cpu_warns(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    dtype_speed.write_measurement(_key(), {'float32': 300.0, 'bfloat16': 480.0})
    caplog.set_level(logging.INFO, logger='absl')
    try:
        assert dtype_speed.settle('auto', GENOA, True, True, tf.__version__) == 'bfloat16'
        assert keras.mixed_precision.global_policy().name == 'mixed_bfloat16'
    finally:
        keras.mixed_precision.set_global_policy('float32')
    assert dtype_speed.settle('float16', GENOA, True, True, tf.__version__, _flag) == 'float16'
    assert dtype_speed.settle('float16', GENOA, False, True, tf.__version__, _flag) == 'float16'  # a GPU: quiet
    assert dtype_speed.settle('float16', ROME, True, True, tf.__version__, _flag) == 'float16'
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith('--dtype=float16 on a CPU: TensorFlow emulates float16 arithmetic there')
    assert warnings[0].endswith('; --dtype=auto picks bfloat16 where it is faster')
    assert 'bfloat16' not in warnings[1], 'no pointer to bfloat16 where the CPU has no bfloat16 arithmetic'


def test_the_start_up_line_carries_the_hint_of_the_cached_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, 'describe_machine', lambda: GENOA)
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
    strategy = tf.distribute.get_strategy()
    line = machine.startup_line(strategy, 'float32', _flag, tmp_path)
    assert line.endswith('strategy: default, 1 replica; ' + NOT_MEASURED), line
    dtype_speed.write_measurement(_key(), {'float32': 300.0, 'bfloat16': 480.0}, tmp_path, DAY)
    line = machine.startup_line(strategy, 'float32', _flag, tmp_path)
    assert line.endswith(
        'replica; bfloat16 trained resnet32 1.6 times as fast as float32 on this machine'
        ' (measured 2026-12-02): --dtype=bfloat16 or --dtype=auto'
    ), line
    assert machine.startup_line(strategy, 'bfloat16', _flag, tmp_path).endswith('strategy: default, 1 replica')
    dtype_speed.write_measurement(_key(), {'float32': 300.0, 'bfloat16': 243.0}, tmp_path, DAY)
    assert machine.startup_line(strategy, 'float32', _flag, tmp_path).endswith('strategy: default, 1 replica')


@pytest.mark.slow
def test_measure_times_each_dtype_and_leaves_the_policy_alone():
    rates = dtype_speed.measure(['float32', 'bfloat16'], hps=tiny_hparams(), steps=1, rounds=1, warmup=1)
    assert set(rates) == {'float32', 'bfloat16'} and all(rate > 0 for rate in rates.values()), rates
    assert keras.mixed_precision.global_policy().name == 'float32'


@pytest.mark.parametrize('strategy', ['multi_worker_mirrored', 'tpu'])
def test_auto_is_refused_for_a_cluster(strategy):
    result = run_main('--mode=train', '--log_root=unused', '--dtype=auto', f'--distribution_strategy={strategy}')
    assert_user_error(result, '--dtype: auto measures this machine alone', alone=True)


def test_onednn_profile_sums_the_kernels_per_step(tmp_path):
    """scripts/onednn_profile.py on a log as oneDNN writes it: per step, by kind, pass and data type,
    the longest first, after the mark of the profiled steps when there is one."""
    exec_line = 'onednn_verbose,v1,primitive,exec,cpu,{},{},{},{},,,mb2ic16oc16,{}'
    log = tmp_path / 'verbose.log'
    log.write_text(
        '\n'.join(
            [
                exec_line.format('convolution', 'jit:avx512_core', 'forward_training', 'src:f32::blocked:acdb::f0', 9),
                'onednn_profile: profiled steps start',
                exec_line.format(
                    'reorder', 'jit:uni', 'undef', 'src:bf16::blocked:cdba::f0 dst:bf16::blocked:x::f0', 1
                ),
                exec_line.format(
                    'reorder', 'jit:uni', 'undef', 'src:bf16::blocked:cdba::f0 dst:bf16::blocked:x::f0', 2
                ),
                exec_line.format('gemm_api', '', 'undef', 'src_f32::blocked:ba:f0 wei_f32::blocked:ab:f0', 2),
                'onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx512_core,forward_training,,,,,9',
                exec_line.format(
                    'convolution', 'brg_conv_fwd:avx512_core_bf16', 'forward_training', 'src:bf16:a:b::f0', 5
                ),
                exec_line.format(
                    'convolution', 'brg_conv_fwd:avx512_core_bf16', 'forward_training', 'src:bf16:a:b::f0', 4
                ),
            ]
        )
    )
    result = run_script('scripts/onednn_profile.py', f'--log={log}', '--steps=2', timeout=300)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    assert rows == [
        '| convolution | brg_conv_fwd:avx512_core_bf16 | forward_training | bf16 | 1 | 4.5 | 64.3% |',
        '| reorder | jit:uni | undef | bf16 | 1 | 1.5 | 21.4% |',
        '| gemm_api |  | undef | f32 | 0.5 | 1.0 | 14.3% |',
        '| all | | | | 2.5 | 7.0 | 100% |',
    ], result.stdout


def test_setup_picks_auto_from_the_cache_and_warns_of_float16_on_a_cpu(tmp_path):
    """resnet_cifar.setup() as a user's script calls it, on this machine with a faked measurement
    cached: auto is bfloat16 where the CPU computes in it, else float32 unmeasured; float16 on a
    CPU is one warning line."""
    described = machine.describe_machine()
    dtype_speed.write_measurement(
        dtype_speed.machine_key(described, tf.__version__),
        {'float32': 300.0, 'bfloat16': 480.0},
        tmp_path / 'resnet-cifar',
    )
    code = (
        'import keras, resnet_cifar\n'
        "print(resnet_cifar.setup(dtype='auto'), keras.mixed_precision.global_policy().name)\n"
        "print(resnet_cifar.setup(dtype='float16'))\n"
    )
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, 'XDG_CACHE_HOME': str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    on_cpu, bfloat16 = not described['gpus'], machine.onednn_on() and dtype_speed.bfloat16_feature(described)
    if on_cpu:
        expected = 'bfloat16 mixed_bfloat16' if bfloat16 else 'float32 float32'
        assert result.stdout.splitlines() == [expected, 'float16'], result.stdout
        assert 'measuring' not in result.stderr, 'read from the cache'
    warnings = [line for line in result.stderr.splitlines() if line.startswith('warning: ')]
    assert len(warnings) == (1 if on_cpu else 0), result.stderr
    assert not warnings or warnings[0].startswith('warning: dtype=float16 on a CPU: TensorFlow emulates'), warnings
