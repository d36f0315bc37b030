"""How a run describes the machine: the CPU from /proc/cpuinfo, oneDNN's instruction set, the GPUs,
and the start-up line (as a user sees it on the command line: test_resnet_main.py).
"""

import os

import pytest

from resnet_cifar import devices, machine

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


def test_describe_cpu_reads_the_model_and_the_instruction_sets():
    assert machine.describe_cpu(SAPPHIRE_RAPIDS) == {
        'cpu_model': 'Intel(R) Xeon(R) Platinum 8480+',
        'avx2': True,
        'avx512f': True,
        'avx512_bf16': True,
        'avx512_fp16': False,
        'amx_tile': True,
        'amx_bf16': True,
    }
    rome = machine.describe_cpu(EPYC_ROME)
    assert rome['cpu_model'] == 'AMD EPYC 7B12' and rome['avx2'] is True
    assert not any(rome[flag] for flag in ('avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16'))
    arm = machine.describe_cpu(ARM)  # no model name, no x86 flags ('bf16' is ARM's, not avx512_bf16)
    assert arm['cpu_model'] and not any(arm[flag] for flag in machine.CPU_FLAGS)
    assert machine.describe_cpu('')['cpu_model'], 'without /proc/cpuinfo: the platform names the CPU'


def test_read_cpuinfo_takes_a_path(tmp_path):
    (tmp_path / 'cpuinfo').write_text(EPYC_GENOA)
    assert machine.describe_cpu(machine.read_cpuinfo(tmp_path / 'cpuinfo'))['avx512_bf16'] is True
    assert machine.read_cpuinfo(tmp_path / 'missing') == ''


def _machine(cpuinfo=EPYC_ROME, gpus=(), hidden_gpus=0, cpus=2):
    return {**machine.describe_cpu(cpuinfo), 'cpus': cpus, 'gpus': list(gpus), 'hidden_gpus': hidden_gpus}


def _flag(key):
    return f'--{key}'


@pytest.mark.parametrize(
    'described, strategy, gpus_used, replicas, expected',
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
def test_the_start_up_line(described, strategy, gpus_used, replicas, expected):
    assert machine.describe_run(described, strategy, gpus_used, replicas, name=_flag) == expected


def test_a_hint_ends_the_line():
    line = machine.describe_run(_machine(EPYC_GENOA), 'default', [], 1, hint='a hint')
    assert line == 'devices: CPU (AMD EPYC 9B14, 2 logical cores; no GPU visible); strategy: default, 1 replica; a hint'


def test_describe_machine_names_the_visible_gpus(fake_gpus):
    fake_gpus(3)
    devices.configure_tensorflow(num_gpus=2)
    described = machine.describe_machine(EPYC_GENOA)
    assert described['gpus'] == ['NVIDIA A100', 'NVIDIA A100'] and described['hidden_gpus'] == 1
    assert described['cpu_model'] == 'AMD EPYC 9B14' and described['cpus'] == os.cpu_count()
    line = machine.describe_run(described, 'mirrored', [0, 1], 2)
    assert line == 'devices: 2 GPUs (NVIDIA A100, NVIDIA A100); strategy: mirrored, 2 replicas'


def test_the_isa_onednn_reports_is_read_from_its_verbose_lines():
    output = (
        'onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)\n'
        'onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2\n'
        'onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support\n'
        'onednn_verbose,v1,info,gpu,runtime:none\n'
    )
    assert machine.parse_onednn_isa(output) == 'Intel AVX-512 with Intel DL Boost and bfloat16 support'
    assert machine.parse_onednn_isa('dnnl_verbose,info,cpu,isa:Intel AVX2\n') == 'Intel AVX2'  # older oneDNN
    assert machine.parse_onednn_isa('some other output\n') is None
