"""The configuration: presets, overrides, and the one value a run is built from."""

import dataclasses

import keras
import pytest
from conftest import as_flags

import resnet_model
from resnet_cifar import choices, presets, run_config
from resnet_cifar.errors import UserError
from resnet_cifar.hparams_check import HParamsError

PUBLISHED_PARAMS = {
    'resnet20': 0.27e6,
    'resnet32': 0.46e6,
    'resnet32_modern': 0.46e6,
    'resnet44': 0.66e6,
    'resnet56': 0.85e6,
    'resnet110': 1.7e6,
    'resnet164_bottleneck': 1.7e6,
    'resnet1001_bottleneck': 10.2e6,
    'wrn_28_10': 36.5e6,
    'fast': 1.97e6,  # airbench94's network (its batch-norm weights, which never train, left out)
    'airbench94': 1.97e6,  # the same network
}


def test_every_published_configuration_has_a_preset():
    assert choices.preset_names() == sorted(PUBLISHED_PARAMS)


@pytest.mark.parametrize('preset', sorted(PUBLISHED_PARAMS))
def test_preset_builds_with_published_parameter_count(preset):
    """The network's structure: its variables are left uninitialized (keras.StatelessScope), which
    halves the 1001-layer preset's build."""
    with keras.StatelessScope():
        model = resnet_model.ResNet(presets.load_preset(preset)).build_model()
    count = resnet_model.count_params(model)
    assert abs(count / PUBLISHED_PARAMS[preset] - 1) < 0.02, count
    assert model.output_shape == (None, 10)


def test_parse_overrides():
    assert presets.parse_overrides('train_steps=960,lr_boundaries=[480, 720],optimizer=sgd,use_bottleneck=True') == {
        'train_steps': 960,
        'lr_boundaries': [480, 720],
        'optimizer': 'sgd',
        'use_bottleneck': True,
    }
    assert presets.parse_overrides('') == {}
    with pytest.raises(HParamsError, match='key=value'):
        presets.parse_overrides('train_steps')
    with pytest.raises(HParamsError, match='brackets'):
        presets.parse_overrides('lr_boundaries=[1,2')


def test_unknown_preset_and_bad_preset_file(tmp_path):
    with pytest.raises(HParamsError, match="unknown preset 'resnet33'.*resnet32"):
        presets.load_preset('resnet33')
    bad = tmp_path / 'mine.json'
    bad.write_text('{"num_residual_units": 2, "dropout": 0.3}')
    with pytest.raises(HParamsError, match=f"{bad}: unknown hparam 'dropout'"):
        presets.load_preset(str(bad))
    bad.write_text('{"num_residual_units": 2,')
    with pytest.raises(HParamsError, match='not valid JSON'):
        presets.load_preset(str(bad))
    good = tmp_path / 'r20.json'
    good.write_text('{"num_residual_units": 3}')
    assert presets.load_preset(str(good)).num_residual_units == 3


def test_a_configuration_is_one_immutable_value_saved_as_json(tmp_path):
    config = run_config.new_run(str(tmp_path), preset='resnet110', overrides={'train_steps': 7}, data_dir=str(tmp_path))
    assert isinstance(config.hparams, resnet_model.HParams) and config.hparams.num_residual_units == 18
    assert config.data.train_data_path == str(tmp_path / 'data_batch_*.bin')
    assert config.train_folder == str(tmp_path / 'train') and config.eval_folder == str(tmp_path / 'eval')
    moved = dataclasses.replace(config, log_root=str(tmp_path / 'moved'))  # the folders follow the run
    assert moved.train_folder == str(tmp_path / 'moved' / 'train')
    assert moved.eval_folder == str(tmp_path / 'moved' / 'eval')
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.eval_once = True
    saved = config.to_json()
    assert set(saved) == {'dataset', 'preset', 'hparams', 'data', 'dtype'} and saved['hparams']['train_steps'] == 7
    assert saved['dtype'] == 'float32'  # setup()'s, the default
    again = run_config.from_json(saved, config.log_root, source='test')
    assert again == config


def test_num_classes_follows_the_dataset(tmp_path):
    assert run_config.new_run(str(tmp_path), dataset='cifar100').hparams.num_classes == 100
    with pytest.raises(HParamsError, match='num_classes: follows dataset'):
        run_config.new_run(str(tmp_path), overrides={'num_classes': 100})


@pytest.mark.parametrize(
    'options, key',
    [
        ({'eval_split': 'train'}, 'eval_split'),
        ({'summary_every_steps': 0}, 'summary_every_steps'),
        ({'input': 'gpu'}, 'input'),
        ({'steps_per_call': 0}, 'steps_per_call'),
    ],
)
def test_impossible_options_are_refused_naming_the_setting(tmp_path, options, key):
    with pytest.raises(UserError) as error:
        run_config.new_run(str(tmp_path), **options)
    assert error.value.key == key


def test_an_override_of_an_unknown_hparam_names_the_override(tmp_path):
    with pytest.raises(HParamsError, match="hparams_override: unknown hparam 'dropout'") as error:
        run_config.new_run(str(tmp_path), overrides={'dropout': 0.5})
    assert error.value.line(lambda key: f'--{key}').startswith("--hparams_override: unknown hparam 'dropout'")


@pytest.mark.parametrize(
    'override, fragments',
    [
        ('lrn_rate=-0.1', ['lrn_rate', 'positive']),
        ('lrn_rate=0', ['lrn_rate', 'positive']),
        ('num_residual_units=0', ['num_residual_units', 'positive']),
        ('batch_size=0', ['batch_size', 'positive']),
        ('optimizer=adam', ['optimizer', "'mom', 'sgd', 'nesterov' or 'muon'"]),
        ('train_steps=ten', ['train_steps', 'an integer']),
    ],
)
def test_an_impossible_override_is_named_with_its_flag(tmp_path, override, fragments):
    """As --hparams_override=KEY=VALUE gives it: the key, what it must be, and the flag to fix."""
    with pytest.raises(UserError) as error:
        run_config.new_run(str(tmp_path), overrides=presets.parse_overrides(override))
    line = as_flags(error.value)
    assert '--hparams_override' in line, line
    for fragment in fragments:
        assert fragment in line, line


def test_a_user_error_names_settings_as_the_caller_does():
    error = UserError(
        'runs/eval_timeout_secs/x: nothing within 5 s (eval_timeout_secs)', 'log_root', ['eval_timeout_secs']
    )
    assert str(error) == 'log_root: runs/eval_timeout_secs/x: nothing within 5 s (eval_timeout_secs)'
    flags_line = error.line(lambda key: f'--{key}')
    assert flags_line == '--log_root: runs/eval_timeout_secs/x: nothing within 5 s (--eval_timeout_secs)'
