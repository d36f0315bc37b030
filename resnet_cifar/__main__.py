"""`python -m resnet_cifar` and the installed `resnet-cifar` command: resnet_main.py's command line."""

import runpy


def main(program='resnet-cifar'):
    """Runs resnet_main as the program's main module, as `python resnet_main.py` does, so that
    absl's --help shows its usage and flags, its examples with `program`, the command the user ran."""
    runpy.run_module('resnet_main', init_globals={'PROGRAM': program}, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    main('python -m resnet_cifar')
