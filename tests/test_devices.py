"""Which devices and strategy a run uses.

The choice is a function of counts, tested as such; where TensorFlow is asked, it is told of fake
GPUs (conftest's fake_gpus: no GPU strategy is created).
"""

import pytest
import tensorflow as tf
from conftest import as_flags

from resnet_cifar import devices
from resnet_cifar.errors import UserError

GPU = 'GPU'


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


def test_gpu_numbers_of_device_names():
    names = ['/job:localhost/replica:0/task:0/device:GPU:0', '/job:worker/replica:0/task:0/device:GPU:3']
    assert devices.gpu_numbers(names) == [0, 3]
    assert devices.gpu_numbers(['/job:localhost/replica:0/task:0/device:CPU:0']) == []


def test_strategies_over_the_cpu_are_named_and_use_no_gpu(fake_gpus):
    fake_gpus(0)
    for strategy, name in (
        (tf.distribute.get_strategy(), 'default'),
        (tf.distribute.OneDeviceStrategy('/cpu:0'), 'one_device'),
        (tf.distribute.MirroredStrategy(['/cpu:0']), 'mirrored'),
    ):
        assert devices.strategy_devices(strategy) == (name, [])


def test_the_default_strategy_runs_on_the_first_visible_gpu(fake_gpus):
    fake_gpus(2)
    assert devices.strategy_devices(tf.distribute.get_strategy()) == ('default', [0])
