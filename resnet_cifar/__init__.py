"""resnet-cifar: ResNet on CIFAR-10/100 in TensorFlow 2, the 2016 TF-models trainer and newer recipes.

    import resnet_cifar

    resnet_cifar.setup()  # TensorFlow's kernels, plain progress lines, devices: as the command line
    config = resnet_cifar.new_run('runs/python', overrides={'train_steps': 20}, data_dir='data')
    resnet_cifar.train(config)

Importing the package starts nothing: each name below loads its module on first use.
"""

import importlib

# The Python API: each name and the module that defines it.
_API = {
    'setup': 'resnet_cifar.startup',
    'new_run': 'resnet_cifar.run_config',
    'RunConfig': 'resnet_cifar.run_config',
    'DataSettings': 'resnet_cifar.run_config',
    'read_config': 'resnet_cifar.run_folder',
    'train': 'resnet_cifar.training',
    'evaluate': ('resnet_cifar.evaluation', 'evaluate_checkpoints'),
    'load': 'resnet_cifar.trained_model',
    'predict': 'resnet_cifar.trained_model',
    'export': 'resnet_cifar.trained_model',
    'UserError': 'resnet_cifar.errors',
}
__all__ = sorted(_API)


def __getattr__(name):
    """PEP 562: resnet_cifar.NAME imports NAME's module when first asked for."""
    if name not in _API:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_API})
