"""Writes the key table of docs/presets.md from the hparam schema (resnet_cifar/hparams_schema.py),
between its two marker lines. Run it after adding or changing an hparam; a test checks the table is
current.

    python scripts/hparams_table.py
"""

import os
import sys

from resnet_cifar import atomic_write, hparams_schema

PRESETS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'presets.md')


def with_current_table(text):
    """`text` (docs/presets.md) with the part between the markers made anew."""
    begin, end = text.index(hparams_schema.TABLE_BEGIN), text.index(hparams_schema.TABLE_END)
    return text[:begin] + hparams_schema.markdown_table() + text[end + len(hparams_schema.TABLE_END) :]


def main():
    with open(PRESETS_DOC, encoding='utf-8') as f:
        text = f.read()
    if hparams_schema.TABLE_BEGIN not in text or hparams_schema.TABLE_END not in text:
        sys.exit(f'error: {PRESETS_DOC}: the hparams table markers are missing; put them back where the table goes')
    atomic_write.write_text(PRESETS_DOC, with_current_table(text))
    print(f'wrote the hparams table of {PRESETS_DOC}')


if __name__ == '__main__':
    main()
