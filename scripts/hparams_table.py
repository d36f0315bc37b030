"""Writes the key table of docs/presets.md from the hparam schema (resnet_cifar/hparams_schema.py),
between its two marker lines. Run it after adding or changing an hparam; a test checks the table is
current.

    python scripts/hparams_table.py
"""

import json
import os
import re
import sys

from resnet_cifar import atomic_write, hparams_schema

TABLE_BEGIN = '<!-- the hparams table: made by scripts/hparams_table.py from resnet_cifar/hparams_schema.py -->'
TABLE_END = '<!-- end of the hparams table -->'
PRESETS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'presets.md')


def markdown_table():
    """The key table of docs/presets.md, between TABLE_BEGIN and TABLE_END."""
    rows = [
        '| key | kind | default | what it is | rule | since |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    for key in hparams_schema.SCHEMA:
        kind = 'list of integers' if key.kind is list else key.kind.__name__
        default = json.dumps(key.default)
        rules = '; '.join(rule.doc or re.sub(r' \(\{hps\.\w+\}\)', '', rule.expected) for rule in key.rules)
        rules = rules or 'any'
        rows.append(f'| `{key.name}` | {kind} | `{default}` | {key.meaning} | {rules} | {key.version} |')
    versions = [f'{number}: {what}' for number, what in hparams_schema.VERSIONS.items()]
    return '\n'.join([TABLE_BEGIN, *rows, '', 'Versions of hparams.json: ' + '; '.join(versions) + '.', TABLE_END])


def with_current_table(text):
    """`text` (docs/presets.md) with the part between the markers made anew."""
    begin, end = text.index(TABLE_BEGIN), text.index(TABLE_END)
    return text[:begin] + markdown_table() + text[end + len(TABLE_END) :]


def main():
    with open(PRESETS_DOC, encoding='utf-8') as f:
        text = f.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        sys.exit(f'error: {PRESETS_DOC}: the hparams table markers are missing; put them back where the table goes')
    atomic_write.write_text(PRESETS_DOC, with_current_table(text))
    print(f'wrote the hparams table of {PRESETS_DOC}')


if __name__ == '__main__':
    main()
