"""Hparams from values a user gave (a preset, an override, a saved run): each value's kind and each
rule of hparams_schema checked, a refusal naming the key. Pure Python, so a mistake is refused before
TensorFlow starts."""

import math

from resnet_cifar.errors import UserError
from resnet_cifar.hparams_schema import DEFAULT_HPARAMS, KEYS, SCHEMA, HParams


class HParamsError(UserError):
    """A preset, override or value the user gave is not usable; the message says which. From a
    rule of one hparam: `hparam` is its key, `problem` what is wrong with its value, and `related`
    the other hparams the rule depends on (warmup_steps' on train_steps), which a user may have
    changed instead."""

    def __init__(self, message, key=None, mentions=(), hparam=None, problem=None, related=()):
        super().__init__(message, key, mentions)
        self.hparam, self.problem, self.related = hparam, problem, tuple(related)


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
        raise HParamsError(
            e.message.removeprefix('hparam '), source, hparam=e.hparam, problem=e.problem, related=e.related
        ) from None


def short(value):
    """A value as a message quotes it: a long list as its start and its length."""
    text = repr(value)
    if len(text) <= 80:
        return text
    return f'{text[:60]}... ({len(value)} items)' if isinstance(value, list) else f'{text[:60]}...'


_EXPECTED_KIND = {bool: 'true or false', int: 'an integer', float: 'a finite number', str: 'a string'}


def _coerce(key, value):
    """`value` as `key`'s kind, or a refusal; ints are accepted for floats."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key.kind is list:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        expected = 'a list of integers'
    else:
        is_float = isinstance(value, float) and math.isfinite(value)
        kinds = {bool: isinstance(value, bool), int: is_int, float: is_int or is_float, str: isinstance(value, str)}
        ok = kinds[key.kind]
        expected = _EXPECTED_KIND[key.kind]
        value = float(value) if ok and key.kind is float else value
    if not ok:
        _refuse(key.name, f'expected {expected}, got {short(value)}')
    return value


def _refuse(name, problem, related=()):
    raise HParamsError(f'hparam {name}: {problem}', hparam=name, problem=problem, related=related)


def validate(hps):
    """Rejects values no run could use, naming the key and the rule it breaks; returns `hps`. Every
    key's own rule comes first, so a wrong value is named before a rule relating it to another."""
    for rules in ([key.rules[:1] for key in SCHEMA], [key.rules[1:] for key in SCHEMA]):
        for key, key_rules in zip(SCHEMA, rules, strict=True):
            for rule in key_rules:
                if not rule.holds(hps):
                    value = getattr(hps, key.name)
                    _refuse(key.name, f'expected {rule.expected.format(hps=hps)}, got {short(value)}', rule.related)
    return hps
