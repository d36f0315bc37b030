"""Lists the runs under a folder, a row each, or compares chosen runs side by side (docs/usage.md).

    python scripts/runs.py [ROOT ...]                    # default: runs
    python scripts/runs.py --compare=runs/r32,runs/r32_modern

A row: the run folder, its dataset and preset (with what differs from the preset's network), the
step of its newest checkpoint of train_steps, its last eval's precision (at which step), its best,
and its training time. --compare prints each of these numbers per run and each run's difference
from the first, as scripts/sweep.py --compare does for sweeps. Nothing is written.
"""

from absl import flags

from resnet_cifar import errors, startup

flags.DEFINE_list('compare', [], 'Two or more run folders: their numbers side by side.')
FLAGS = flags.FLAGS


def main(argv):
    startup.setup(command=True)  # quietly, as a run starts: the folders are read with TensorFlow
    from resnet_cifar import run_list

    if FLAGS.compare:
        if len(argv) > 1:
            raise errors.UserError('give run folders to list, or --compare, not both', 'compare')
        print(run_list.compare(FLAGS.compare))
        return 0
    runs = [run for root in argv[1:] or ['runs'] for run in run_list.find_runs(root)]
    print(run_list.table(runs) if runs else f'no runs under {", ".join(argv[1:] or ["runs"])}')
    return 0


if __name__ == '__main__':
    errors.run_program(main, FLAGS)
