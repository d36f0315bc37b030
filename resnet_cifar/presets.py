"""HParams from a preset (hparams/NAME.json, or a JSON file of the user's) with overrides on top,
`hparams_override`'s `key=value,...` text parsed; a refusal blamed on the setting the user gave."""

import json
import os

from resnet_cifar import json_files
from resnet_cifar.choices import PRESETS_DIR, is_preset_file, preset_names
from resnet_cifar.datasets import num_classes_of
from resnet_cifar.hparams_check import HParamsError, make_hparams


def _read_json(path):
    return json_files.read_json(path, 'give a JSON object of hparam names to values', key='hparams', error=HParamsError)


def load_preset(name_or_path):
    """The preset hparams/NAME.json, or a JSON file of hparam values, over the defaults."""
    if is_preset_file(name_or_path):
        path = name_or_path
        if os.path.isdir(path):
            raise HParamsError(f'{path} is a folder; give a JSON file of hparam values', 'hparams')
        if not os.path.isfile(path):
            raise HParamsError(f'no such file {path}', 'hparams')
    else:
        path = os.path.join(PRESETS_DIR, name_or_path + '.json')
        if not os.path.isfile(path):
            raise HParamsError(f'unknown preset {name_or_path!r}; presets: {", ".join(preset_names())}', 'hparams')
    return make_hparams(_read_json(path), source=path)


def _parse_value(text):
    """An override value: JSON where it parses (numbers, lists, true/false), else a string."""
    lowered = {'true': 'true', 'false': 'false'}.get(text.strip().lower(), text.strip())
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text.strip()


def parse_overrides(text):
    """'a=1,b=[2,3],c=mom' -> {'a': 1, 'b': [2, 3], 'c': 'mom'}; commas inside brackets stay."""
    overrides, depth, item = {}, 0, ''
    for char in (text or '') + ',':
        depth += {'[': 1, ']': -1}.get(char, 0)
        if char == ',' and depth == 0:
            if item.strip():
                key, sep, value = item.partition('=')
                if not sep or not key.strip():
                    raise HParamsError(f'expected key=value, got {item.strip()!r}', 'hparams_override')
                if key.strip() in overrides:
                    raise HParamsError(f'{key.strip()} is given twice; give each key once', 'hparams_override')
                overrides[key.strip()] = _parse_value(value)
            item = ''
        else:
            item += char
    if depth != 0:
        raise HParamsError(f'unbalanced brackets in {text!r}', 'hparams_override')
    return overrides


def build_hparams(preset='resnet32', overrides=None, dataset='cifar10', sources=None):
    """The HParams of a run: `preset` (a preset's name, a JSON file, or HParams already read, such as
    a saved run's) with `overrides` on top (a dict, or hparams_override's `key=value,...` text);
    num_classes follows `dataset`. The one assembly the command line, new_run and the scripts use.

    A value refused is blamed on the setting the user gave: `sources` maps an override's key to
    the setting it came from (default hparams_override; the command line's train_steps: the flag).
    When the preset's value breaks a rule with an override (fast's warmup_steps with a smaller
    train_steps), the message names the override and says which preset key must change with it."""
    hps = load_preset(preset) if isinstance(preset, str) else preset
    overrides = parse_overrides(overrides) if isinstance(overrides, str) else dict(overrides or {})
    values = {**hps._asdict(), **overrides, 'num_classes': num_classes_of(dataset, overrides.get('num_classes'))}
    try:
        return make_hparams(values)
    except HParamsError as e:
        origin = f'preset {preset}' if isinstance(preset, str) else 'the run'
        raise _blamed(e, overrides, dict(sources or {}), origin) from None


def _blamed(error, overrides, sources, origin):
    """`error` (a rule of one hparam broken) worded for the setting the user gave (see build_hparams)."""

    def source(key):
        return sources.get(key, 'hparams_override')

    def named(key, text):  # 'train_steps: ...' under hparams_override; the text alone under its own flag
        return text if source(key) == key else f'{key}: {text}'

    if error.hparam is None or error.hparam in overrides:
        return HParamsError(named(error.hparam, error.problem) if error.hparam else error.message, source(error.hparam))
    given = [key for key in error.related if key in overrides]
    if not given:
        return HParamsError(error.message.removeprefix('hparam '), 'hparams_override')
    hparam, key = error.hparam, given[0]
    return HParamsError(
        named(
            key,
            f"{origin}'s {hparam}: {error.problem}; give {hparam} too: hparams_override={hparam}=VALUE",
        ),
        source(key),
        mentions=['hparams_override'],
    )
