"""A run's saved configuration read back strictly: hparams.json, or the copy every checkpoint
carries. Every key must be there and every value is checked with the rules the flags and
overrides follow (run_config, hparams_check), so nothing is completed silently.

Run folders of earlier versions hold fewer hparams: a key that a version added is given its
default (the behaviour before it existed) only when the file holds none of that version's keys.
A file holding some of them lost the others, and is refused.
"""

import dataclasses

from resnet_cifar import hparams_schema, run_config
from resnet_cifar.errors import UserError

TOP_KEYS = ('dataset', 'preset', 'hparams', 'data')
OPTIONAL_KEYS = ('dtype',)  # recorded since a later version; a run without it trained in an unknown dtype
# Every DataSettings field has been saved since the first version.
DATA_KEYS = tuple(field.name for field in dataclasses.fields(run_config.DataSettings))


def hparams_expected(saved_hparams):
    """The hparam keys a saved `hparams` object must hold: those of every version up to the newest
    one it holds a key of (1 if none)."""
    keys = hparams_schema.KEYS
    newest = max((keys[name].version for name in saved_hparams if name in keys), default=1)
    return keys_of_version(newest)


def keys_of_version(version):
    """The hparam keys a run folder of hparams.json `version` holds, in schema order."""
    return [key.name for key in hparams_schema.SCHEMA if key.version <= version]


def parse(saved, log_root, source, way_out):
    """The RunConfig that `saved` (a JSON value read from `source`, a file or a checkpoint) holds;
    anything missing or wrong raises a UserError naming `source` and the key, ending in `way_out`."""

    def refuse(problem):
        raise UserError(f'{source}: {problem}; {way_out}', mentions=['log_root'])

    if not isinstance(saved, dict):
        refuse(f'expected a JSON object with {", ".join(TOP_KEYS)}, got {type(saved).__name__}')
    _check_keys(saved, TOP_KEYS, '', refuse, known=TOP_KEYS + OPTIONAL_KEYS)
    for key in ('hparams', 'data'):
        if not isinstance(saved[key], dict):
            refuse(f'{key}: expected a JSON object, got {saved[key]!r:.60}')
    _check_keys(saved['hparams'], hparams_expected(saved['hparams']), 'hparams.', refuse, known=hparams_schema.KEYS)
    _check_keys(saved['data'], DATA_KEYS, 'data.', refuse)
    for key in ('dataset', 'preset'):
        if not isinstance(saved[key], str) or not saved[key]:
            refuse(f'{key}: expected a name, got {saved[key]!r:.60}')
    try:
        return run_config.from_json(saved, log_root, source)
    except UserError as e:  # a data setting's error names it by its field: say where it is
        refuse(f'data.{e.line()}' if e.key in DATA_KEYS else e.line())


def _check_keys(values, expected, prefix, refuse, known=None):
    missing = [key for key in expected if key not in values]
    if missing:
        refuse(f'{prefix}{missing[0]} is missing')
    unknown = [key for key in values if key not in (known or expected)]
    if unknown:
        refuse(f'{prefix}{unknown[0]} is not a key of a run configuration')
