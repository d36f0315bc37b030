"""What a run offers to choose from, free of TensorFlow: the command line defines its flags (and
prints --help) from these without starting TensorFlow. The datasets are in datasets.py.
"""

import importlib.util
import os

MODES = ('train', 'eval', 'train_and_eval', 'predict', 'export')
EXPORT_FORMATS = ('saved_model', 'keras', 'litert', 'onnx')  # export_formats.py writes each
DATA_SOURCES = ('binary', 'tfds', 'synthetic')
EVAL_SPLITS = ('test', 'validation')
INPUT_PATHS = ('auto', 'tf_data', 'device')  # training batches: chosen, tf.data on the host, or on the device
STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
DTYPE_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}  # Keras' names
DTYPES = (*DTYPE_POLICIES, 'auto')  # auto: the one measured fastest on the machine (dtype_speed.py)


def _presets_dir():
    """hparams/: installed as resnet_cifar.hparams, or beside the package in a checkout."""
    spec = importlib.util.find_spec('resnet_cifar.hparams')
    installed = [path for path in (spec.submodule_search_locations if spec else ()) if os.path.isdir(path)]
    return installed[0] if installed else os.path.join(os.path.dirname(os.path.dirname(__file__)), 'hparams')


PRESETS_DIR = _presets_dir()


def install_command(extra):
    """How to install an optional extra of pyproject.toml: into the checkout the package runs from
    (an editable install: pip install -e 'CHECKOUT[extra]'), or the package from its index."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, 'pyproject.toml')):
        where = '.' if os.path.abspath(os.getcwd()) == checkout else checkout
        return f"pip install -e '{where}[{extra}]'"
    return f"pip install 'resnet-cifar[{extra}]'"


def preset_names():
    return sorted(f[: -len('.json')] for f in os.listdir(PRESETS_DIR) if f.endswith('.json'))


def is_preset_file(name_or_path):
    """Whether `--hparams` names a JSON file rather than a preset."""
    return name_or_path.endswith('.json') or os.sep in name_or_path
