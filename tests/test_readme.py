"""README's "Use from Python" lines, run as written by a fresh Python in a folder outside the checkout:
what only a new process shows (the installed package found from anywhere, setup() before TensorFlow)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_use_from_python_runs_from_any_folder(subset, tmp_path):
    readme = open(os.path.join(ROOT, 'README.md')).read()
    section = readme.split('## Use from Python', 1)[1]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    assert "'../shared/data/cifar10-subset'" in code
    script = tmp_path / 'use.py'
    script.write_text(code.replace('../shared/data/cifar10-subset', subset))
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'test precision 0\.\d{4} on 1017 images', result.stdout), result.stdout + result.stderr
    assert os.path.exists(tmp_path / 'runs' / 'python' / 'ckpt-20.index')
    assert 'step 10/20: loss' in result.stderr + result.stdout  # the plain progress lines, as on the command line
