"""The hparam schema: the one declaration that the defaults, the checks, old-run upgrades and the
docs table come from."""

import re

import pytest
from conftest import load_script

from resnet_cifar.hparams_check import HParamsError, make_hparams
from resnet_cifar.hparams_schema import DEFAULT_HPARAMS, SCHEMA, VERSIONS

PRESETS_DOC = 'docs/presets.md'


def test_the_docs_table_is_the_schemas():
    """docs/presets.md's key table is made from the schema: a key added or changed without running
    scripts/hparams_table.py fails here."""
    with open(PRESETS_DOC, encoding='utf-8') as f:
        text = f.read()
    table = load_script('hparams_table')
    assert table.markdown_table() in text
    assert table.with_current_table(text) == text
    documented = re.findall(r'^\| `(\w+)` \|', table.markdown_table(), flags=re.M)
    assert documented == list(DEFAULT_HPARAMS._fields)


def test_every_default_keeps_every_rule_and_its_kind():
    assert make_hparams(DEFAULT_HPARAMS._asdict()) == DEFAULT_HPARAMS
    for key in SCHEMA:
        assert isinstance(key.default, key.kind), key.name
        assert key.version in VERSIONS, key.name


def test_versions_only_add_keys_at_the_end():
    """An old hparams.json lacks exactly the keys of later versions: they must come after its own."""
    versions = [key.version for key in SCHEMA]
    assert versions == sorted(versions)
    assert sorted(set(versions)) == list(range(1, max(versions) + 1))


@pytest.mark.parametrize(
    'values, message',
    [
        ({'train_steps': 0}, 'train_steps: expected a positive integer up to 2147483647, got 0'),
        ({'min_lrn_rate': 0.5}, 'min_lrn_rate: expected at most lrn_rate (0.1), got 0.5'),
        ({'use_bottleneck': True, 'filters': [16, 18, 32, 64]}, 'filters: expected stage widths divisible by 4'),
        ({'lr_schedule': 'cosine', 'warmup_steps': 10, 'train_steps': 10}, 'warmup_steps: expected fewer than'),
        ({'network': 'airbench', 'num_residual_units': 2}, "num_residual_units: expected 1 for network 'airbench'"),
        ({'lr_boundaries': list(range(1, 102))}, 'lr_boundaries: expected up to 100 strictly increasing'),
        ({'flip_tta': 1}, 'flip_tta: expected true or false, got 1'),
    ],
)
def test_a_broken_rule_names_the_key_and_what_it_expects(values, message):
    with pytest.raises(HParamsError) as error:
        make_hparams(values)
    assert message in error.value.message


def test_a_rule_that_depends_on_another_key_follows_it():
    """warmup_steps may exceed train_steps with the piecewise schedule (the 2016 recipe allows it)."""
    assert make_hparams({'warmup_steps': 20, 'train_steps': 10}).warmup_steps == 20
