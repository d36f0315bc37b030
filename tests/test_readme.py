"""README's "Use from Python" lines, run as written, with no flags."""

import os
import re

from conftest import ROOT


def test_use_from_python_trains_and_evaluates_a_tiny_run(subset, tmp_path, monkeypatch, capsys):
    readme = open(os.path.join(ROOT, 'README.md')).read()
    section = readme.split('### Use from Python', 1)[1]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    assert "'../shared/data/cifar10-subset'" in code
    monkeypatch.chdir(tmp_path)  # the run folder goes here, not into the checkout
    exec(compile(code.replace('../shared/data/cifar10-subset', subset), 'README.md', 'exec'), {})
    printed = capsys.readouterr().out
    assert re.search(r'test precision 0\.\d{4} on 1017 images', printed), printed
    assert os.path.exists(tmp_path / 'runs' / 'python' / 'ckpt-20.index')
