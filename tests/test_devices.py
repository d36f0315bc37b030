"""Which devices and strategy a run uses, and how its start-up line describes the machine.

The choice is a function of counts, tested as such; where TensorFlow is asked, it is told of fake
GPUs (no GPU strategy is created); one run of resnet_main.py shows the line as a user sees it.
"""

import os
import re
import sys

import pytest
import tensorflow as tf
from conftest import as_flags, run_main

from resnet_cifar import devices
from resnet_cifar.errors import UserError

GPU = 'GPU'
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
EPYC_ROME = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
"""
EPYC_GENOA = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx avx2 avx512f avx512_bf16 avx512_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16
"""


@pytest.mark.parametrize(
    'num_gpus, visible, name, expected',
    [
        (None, 0, None, ('default', ['/cpu:0'])),  # no GPU: the CPU, as before
        (None, 1, None, ('one_device', ['/gpu:0'])),  # a GPU is used without being asked for
        (None, 3, None, ('mirrored', ['/gpu:0', '/gpu:1', '/gpu:2'])),  # every visible GPU
        (0, 2, None, ('default', ['/cpu:0'])),  # --num_gpus=0 forces the CPU
        (1, 4, None, ('one_device', ['/gpu:0'])),
        (2, 4, None, ('mirrored', ['/gpu:0', '/gpu:1'])),
        (None, 0, 'mirrored', ('mirrored', ['/cpu:0'])),  # --distribution_strategy overrides the choice
        (0, 0, 'one_device', ('one_device', ['/cpu:0'])),
        (None, 2, 'default', ('default', ['/gpu:0'])),
        (None, 2, 'one_device', ('one_device', ['/gpu:0'])),
        (None, 2, 'multi_worker_mirrored', ('multi_worker_mirrored', ['/gpu:0', '/gpu:1'])),
        (None, 0, 'tpu', ('tpu', [])),
    ],
)
def test_the_strategy_follows_the_gpus(num_gpus, visible, name, expected):
    assert devices.choose_devices(num_gpus, visible, name) == expected


@pytest.mark.parametrize('num_gpus, visible, says', [(1, 0, '0 GPUs are visible'), (3, 1, '1 GPU is visible')])
def test_more_gpus_than_visible_are_refused(num_gpus, visible, says):
    with pytest.raises(UserError) as error:
        devices.choose_devices(num_gpus, visible)
    assert as_flags(error.value) == f'--num_gpus: {num_gpus} asked for, but {says}'


def _fake_gpus(count):
    return [tf.config.PhysicalDevice(f'/physical_device:GPU:{i}', GPU) for i in range(count)]


@pytest.fixture
def fake_gpus(monkeypatch):
    """TensorFlow reports `count` A100s, of which configure_tensorflow() may hide some; returns the
    devices it was asked to leave visible."""
    state = {}

    def install(count):
        state['physical'] = state['visible'] = _fake_gpus(count)

        def listed(device_type=None):
            return list(state['physical']) if device_type == GPU else real_list(device_type)

        def visible(device_type=None):
            return list(state['visible']) if device_type == GPU else real_visible(device_type)

        def set_visible(gpus, device_type=None):
            assert device_type == GPU, 'only GPUs are ever hidden'
            state['visible'] = list(gpus)

        monkeypatch.setattr(tf.config, 'list_physical_devices', listed)
        monkeypatch.setattr(tf.config, 'get_visible_devices', visible)
        monkeypatch.setattr(tf.config, 'set_visible_devices', set_visible)
        monkeypatch.setattr(tf.config.experimental, 'get_device_details', lambda gpu: {'device_name': 'NVIDIA A100'})
        return state

    real_list, real_visible = tf.config.list_physical_devices, tf.config.get_visible_devices
    return install


@pytest.mark.parametrize(
    'count, num_gpus, expected',
    [
        (0, None, ('default', ['/cpu:0'])),
        (1, None, ('one_device', ['/gpu:0'])),
        (4, None, ('mirrored', ['/gpu:0', '/gpu:1', '/gpu:2', '/gpu:3'])),
        (4, 0, ('default', ['/cpu:0'])),
        (4, 1, ('one_device', ['/gpu:0'])),
        (4, 2, ('mirrored', ['/gpu:0', '/gpu:1'])),
    ],
)
def test_configure_then_plan_with_gpus_reported_by_tensorflow(fake_gpus, count, num_gpus, expected):
    state = fake_gpus(count)
    devices.configure_tensorflow(num_gpus)
    assert len(state['visible']) == (count if num_gpus is None else num_gpus), 'the GPUs not asked for are hidden'
    assert devices.plan(num_gpus=num_gpus) == expected


def test_configure_refuses_more_gpus_than_there_are(fake_gpus):
    state = fake_gpus(2)
    with pytest.raises(UserError) as error:
        devices.configure_tensorflow(num_gpus=3)
    assert as_flags(error.value) == '--num_gpus: 3 asked for, but 2 GPUs are visible'
    assert len(state['visible']) == 2, 'nothing hidden'


def test_describe_cpu_reads_the_model_and_the_instruction_sets():
    assert devices.describe_cpu(SAPPHIRE_RAPIDS) == {
        'cpu_model': 'Intel(R) Xeon(R) Platinum 8480+',
        'avx2': True,
        'avx512f': True,
        'avx512_bf16': True,
        'amx_tile': True,
        'amx_bf16': True,
    }
    rome = devices.describe_cpu(EPYC_ROME)
    assert rome['cpu_model'] == 'AMD EPYC 7B12' and rome['avx2'] is True
    assert not any(rome[flag] for flag in ('avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'))
    arm = devices.describe_cpu(ARM)  # no model name, no x86 flags ('bf16' is ARM's, not avx512_bf16)
    assert arm['cpu_model'] and not any(arm[flag] for flag in devices.CPU_FLAGS)
    assert devices.describe_cpu('')['cpu_model'], 'without /proc/cpuinfo: the platform names the CPU'


def test_read_cpuinfo_takes_a_path(tmp_path):
    (tmp_path / 'cpuinfo').write_text(EPYC_GENOA)
    assert devices.describe_cpu(devices.read_cpuinfo(tmp_path / 'cpuinfo'))['avx512_bf16'] is True
    assert devices.read_cpuinfo(tmp_path / 'missing') == ''


def _machine(cpuinfo=EPYC_ROME, gpus=(), hidden_gpus=0, cpus=2):
    return {**devices.describe_cpu(cpuinfo), 'cpus': cpus, 'gpus': list(gpus), 'hidden_gpus': hidden_gpus}


def _flag(key):
    return f'--{key}'


@pytest.mark.parametrize(
    'machine, strategy, gpus_used, replicas, expected',
    [
        (
            _machine(),
            'default',
            [],
            1,
            'devices: CPU (AMD EPYC 7B12, 2 logical cores; no GPU visible); strategy: default, 1 replica',
        ),
        (
            _machine(hidden_gpus=2),
            'default',
            [],
            1,
            'devices: CPU (AMD EPYC 7B12, 2 logical cores; 2 GPUs hidden by --num_gpus=0); '
            'strategy: default, 1 replica',
        ),
        (
            _machine(gpus=['NVIDIA A100']),
            'one_device',
            [0],
            1,
            'devices: 1 GPU (NVIDIA A100); strategy: one_device, 1 replica',
        ),
        (
            _machine(gpus=['NVIDIA A100', 'NVIDIA A100']),
            'mirrored',
            [0, 1],
            2,
            'devices: 2 GPUs (NVIDIA A100, NVIDIA A100); strategy: mirrored, 2 replicas',
        ),
        (
            _machine(gpus=['NVIDIA A100', 'NVIDIA L4', 'NVIDIA L4']),
            'one_device',
            [0],
            1,
            'devices: 1 of 3 GPUs (NVIDIA A100); strategy: one_device, 1 replica',
        ),
        (
            _machine(gpus=['NVIDIA A100']),
            'one_device',
            [],
            1,
            'devices: CPU (AMD EPYC 7B12, 2 logical cores; 1 GPU visible, not used); strategy: one_device, 1 replica',
        ),
    ],
)
def test_the_start_up_line(machine, strategy, gpus_used, replicas, expected):
    assert devices.describe_run(machine, strategy, gpus_used, replicas, name=_flag) == expected


HINT = 'this CPU has AVX512_BF16: --dtype=bfloat16 trains faster (README, Performance)'


def test_a_cpu_with_bfloat16_instructions_suggests_bfloat16_once():
    genoa = _machine(EPYC_GENOA)
    line = devices.describe_run(genoa, 'default', [], 1, 'float32', name=_flag)
    assert line.endswith('strategy: default, 1 replica; ' + HINT) and line.count('bfloat16') == 1
    amx = devices.describe_run(_machine(SAPPHIRE_RAPIDS), 'default', [], 1, 'float32')
    assert amx.endswith('; this CPU has AMX_BF16: dtype=bfloat16 trains faster (README, Performance)'), amx
    # Not when bfloat16 is already asked for, on an AVX2 CPU, on GPUs, or with TensorFlow's Eigen kernels.
    for line in (
        devices.describe_run(genoa, 'default', [], 1, 'bfloat16'),
        devices.describe_run(genoa, 'default', [], 1, 'float16'),
        devices.describe_run(_machine(EPYC_ROME), 'default', [], 1, 'float32'),
        devices.describe_run({**genoa, 'gpus': ['NVIDIA A100']}, 'one_device', [0], 1, 'float32'),
        devices.describe_run(genoa, 'default', [], 1, 'float32', onednn=False),
    ):
        assert 'this CPU has' not in line, line


def test_describe_machine_names_the_visible_gpus(fake_gpus):
    fake_gpus(3)
    devices.configure_tensorflow(num_gpus=2)
    machine = devices.describe_machine(EPYC_GENOA)
    assert machine['gpus'] == ['NVIDIA A100', 'NVIDIA A100'] and machine['hidden_gpus'] == 1
    assert machine['cpu_model'] == 'AMD EPYC 9B14' and machine['cpus'] == os.cpu_count()
    line = devices.describe_run(machine, 'mirrored', [0, 1], 2, 'float32')
    assert line == 'devices: 2 GPUs (NVIDIA A100, NVIDIA A100); strategy: mirrored, 2 replicas'


def test_the_isa_onednn_reports_is_read_from_its_verbose_lines():
    output = (
        'onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)\n'
        'onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2\n'
        'onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support\n'
        'onednn_verbose,v1,info,gpu,runtime:none\n'
    )
    assert devices.parse_onednn_isa(output) == 'Intel AVX-512 with Intel DL Boost and bfloat16 support'
    assert devices.parse_onednn_isa('dnnl_verbose,info,cpu,isa:Intel AVX2\n') == 'Intel AVX2'  # older oneDNN
    assert devices.parse_onednn_isa('some other output\n') is None


def test_gpu_numbers_of_device_names():
    names = ['/job:localhost/replica:0/task:0/device:GPU:0', '/job:worker/replica:0/task:0/device:GPU:3']
    assert devices.gpu_numbers(names) == [0, 3]
    assert devices.gpu_numbers(['/job:localhost/replica:0/task:0/device:CPU:0']) == []


def test_strategies_on_this_cpu_are_named_and_counted():
    for strategy, name in (
        (tf.distribute.get_strategy(), 'default'),
        (tf.distribute.OneDeviceStrategy('/cpu:0'), 'one_device'),
        (tf.distribute.MirroredStrategy(['/cpu:0']), 'mirrored'),
    ):
        gpus = [0] if name == 'default' and tf.config.get_visible_devices(GPU) else []
        assert devices.strategy_devices(strategy) == (name, gpus)


def test_the_default_strategy_runs_on_the_first_visible_gpu(fake_gpus):
    fake_gpus(2)
    assert devices.strategy_devices(tf.distribute.get_strategy()) == ('default', [0])


def _this_cpu():
    cpuinfo = devices.read_cpuinfo()
    flags = set(next((line.split(':', 1)[1].split() for line in cpuinfo.splitlines() if line.startswith('flags')), []))
    model = re.search(r'^model name\s*:\s*(.+)$', cpuinfo, re.MULTILINE)
    return flags, model.group(1).strip() if model else None


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc/cpuinfo')
def test_a_run_logs_its_devices_and_strategy_in_one_line(tmp_path):
    """resnet_main.py as a user runs it, with no device flag, on this machine."""
    result = run_main(
        '--mode=train',
        '--data_source=synthetic',
        f'--log_root={tmp_path}',
        '--hparams_override=num_residual_units=1,batch_size=16',
        '--train_steps=1',
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split('] ', 1)[1] for line in result.stderr.splitlines() if '] devices: ' in line]
    assert len(lines) == 1, result.stderr
    flags, model = _this_cpu()
    if tf.config.list_physical_devices(GPU):
        assert re.match(r'devices: \d+ GPUs? \(.+\); strategy: (one_device|mirrored), \d+ replicas?$', lines[0])
        return
    expected = f'devices: CPU ({model}, {os.cpu_count()} logical cores; no GPU visible); strategy: default, 1 replica'
    bfloat16 = {'amx_bf16': 'AMX_BF16', 'avx512_bf16': 'AVX512_BF16'}
    feature = next((label for flag, label in bfloat16.items() if flag in flags), None)
    if feature and os.environ.get('TF_ENABLE_ONEDNN_OPTS') != '0':
        expected += f'; this CPU has {feature}: --dtype=bfloat16 trains faster (README, Performance)'
    assert lines[0] == expected
