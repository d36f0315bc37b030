"""Hparams from values a user gave (a preset, an override, a saved run): each value's kind and each
rule of hparams_schema checked, a refusal naming the key. Pure Python, so a mistake is refused before
TensorFlow starts."""

from resnet_cifar.errors import UserError
from resnet_cifar.hparams_schema import DEFAULT_HPARAMS, KEYS, SCHEMA, HParams

MAX_LIST = 64  # far more entries than any list hparam needs: a longer one is a mistake, copied into every checkpoint


class HParamsError(UserError):
    """A preset, override or value the user gave is not usable; the message says which."""


def make_hparams(values, source=None, ranges=True):
    """HParams from DEFAULT_HPARAMS updated by `values`, a dict. A refusal names `source`, the
    setting or file the values came from, then the key: `hparams_override: train_steps: expected
    an integer, got 'ten'`. ranges=False checks the keys and types only (the ranges depend on the
    other values): what the command line refuses before TensorFlow starts."""
    fields = DEFAULT_HPARAMS._asdict()
    try:
        for name, value in values.items():
            if name not in KEYS:
                raise HParamsError(f'unknown hparam {name!r}; known: {", ".join(HParams._fields)}')
            fields[name] = _coerce(KEYS[name], value)
        return validate(HParams(**fields)) if ranges else HParams(**fields)
    except HParamsError as e:
        if source is None:
            raise
        raise HParamsError(e.message.removeprefix('hparam '), key=source) from None


_EXPECTED_KIND = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string'}


def _coerce(key, value):
    """`value` as `key`'s kind, or a refusal; ints are accepted for floats."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key.kind is list:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if ok and len(value) > MAX_LIST:
            raise HParamsError(f'hparam {key.name}: expected at most {MAX_LIST} entries, got {len(value)}')
        expected = 'a list of integers'
    else:
        ok = {bool: isinstance(value, bool), int: is_int, float: is_int or isinstance(value, float)}.get(
            key.kind, isinstance(value, str)
        )
        expected = _EXPECTED_KIND[key.kind]
        value = float(value) if ok and key.kind is float else value
    if not ok:
        raise HParamsError(f'hparam {key.name}: expected {expected}, got {value!r}')
    return value


def validate(hps):
    """Rejects values no run could use, naming the key and the rule it breaks; returns `hps`. Every
    key's own rule comes first, so a wrong value is named before a rule relating it to another."""
    for rules in ([key.rules[:1] for key in SCHEMA], [key.rules[1:] for key in SCHEMA]):
        for key, key_rules in zip(SCHEMA, rules, strict=True):
            for rule in key_rules:
                if not rule.holds(hps):
                    value = getattr(hps, key.name)
                    raise HParamsError(f'hparam {key.name}: expected {rule.expected.format(hps=hps)}, got {value!r}')
    return hps
