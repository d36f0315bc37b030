"""Trains a recipe over a grid of hparam values and several seeds, a run folder per trial below one root,
and tabulates the results (docs/sweeps.md).

    python scripts/sweep.py --root=sweeps/lr --data_dir=DIR --hparams=resnet32 --seeds=3 \\
        --grid='lrn_rate=[0.1,0.2],weight_decay_rate=[2e-4,5e-4]' [--validation_size=5000] \\
        [--engine=local --parallel=2 | --engine=ray [--ray_address=HOST:6379] --trial_cpus=4 --trial_gpus=1]
    python scripts/sweep.py --compare=sweeps/r32,sweeps/r32_cosine

Each trial trains in ROOT/CONFIG/seed_S (ROOT/seed_S without --grid) with resnet_main.py, its output
in ROOT/CONFIG/seed_S.log; as it ends, its final checkpoint is measured on the test split with and
without flip test-time augmentation and, with --validation_size, so is its checkpoint best on
validation. ROOT/results.csv and results.md: a row per trial, the mean, std, min and max per
configuration; `tensorboard --logdir=ROOT` shows them in its HParams dashboard. Running the same
command again (or with more values or seeds) resumes and extends the sweep.
"""

import shlex
import sys

from absl import flags

from resnet_cifar import choices, datasets, errors, startup
from resnet_cifar.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('root', None, 'The sweep folder: a run folder per trial, results.csv, results.md.')
    flags.DEFINE_string('hparams', 'resnet32', 'A preset or a JSON file, as resnet_main.py --hparams.')
    flags.DEFINE_string('hparams_override', '', 'As resnet_main.py --hparams_override: the base of every trial.')
    flags.DEFINE_string(
        'grid', '', "Lists of values per hparam, every combination a configuration: 'lrn_rate=[0.1,0.2]'."
    )
    flags.DEFINE_string('seeds', '3', 'A count N (seeds 0..N-1) or a comma list of seeds (3,7; one alone: 7,).')
    flags.DEFINE_string(
        'data_dir', None, 'As resnet_main.py --data_dir, at the same path on every node (default: the shared subset).'
    )
    flags.DEFINE_enum('dataset', 'cifar10', list(datasets.DATASETS), 'cifar10 or cifar100.')
    flags.DEFINE_integer('validation_size', 0, 'Hold out N training images; evals then run on them.', lower_bound=0)
    flags.DEFINE_integer('eval_every_steps', 1000, 'As resnet_main.py --eval_every_steps.', lower_bound=1)
    flags.DEFINE_enum('dtype', 'float32', list(choices.DTYPE_POLICIES), 'As resnet_main.py --dtype.')
    flags.DEFINE_string('milestones', '0.60,0.65', 'Test precisions whose steps and seconds to reach are reported.')
    flags.DEFINE_list('compare', [], 'Two or more sweep roots: print their results side by side, train nothing.')
    flags.DEFINE_enum('engine', 'local', ['local', 'ray'], 'local: processes on this machine; ray: Ray actors.')
    flags.DEFINE_integer(
        'parallel', 1, 'With --engine=local: how many trials train at a time.', lower_bound=1, upper_bound=1024
    )
    flags.DEFINE_string('ray_address', None, 'With --engine=ray: the cluster to join (default: start a local one).')
    flags.DEFINE_float('trial_cpus', 1, 'With --engine=ray: the CPUs each trial holds.')
    flags.DEFINE_float('trial_gpus', 0, 'With --engine=ray: the GPUs each trial holds.', lower_bound=0)


def make_engine():
    from resnet_cifar import sweep_engines

    ray_flags = [name for name in ('ray_address', 'trial_cpus', 'trial_gpus') if FLAGS[name].present]
    if FLAGS.engine == 'local' and ray_flags:
        raise UserError('is for --engine=ray', ray_flags[0])
    if FLAGS.engine == 'ray' and FLAGS['parallel'].present:
        raise UserError('is for --engine=local; with --engine=ray, Ray runs as many trials as fit', 'parallel')
    if FLAGS.engine == 'ray':
        return sweep_engines.RayEngine(FLAGS.ray_address, FLAGS.trial_cpus, FLAGS.trial_gpus)
    return sweep_engines.LocalEngine(FLAGS.parallel)


def main(argv):
    """Reads the flags and runs the sweep; exit code 1 when some trial failed."""
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    startup.setup(dtype=FLAGS.dtype, command=True)
    from resnet_cifar import sweep, sweep_plan, sweep_results  # they import TensorFlow: after its start-up

    if FLAGS.compare:
        print(sweep_results.compare(FLAGS.compare))
        return 0
    if not FLAGS.root:
        raise UserError('needed: the sweep folder (or --compare=ROOT1,ROOT2)', 'root')
    fields = sweep_plan.SweepRecipe.__dataclass_fields__
    recipe = sweep_plan.SweepRecipe(**{name: getattr(FLAGS, name) for name in fields})
    grid, seeds = sweep_plan.parse_grid(FLAGS.grid), sweep_plan.parse_seeds(FLAGS.seeds)
    milestones = sweep_results.parse_milestones(FLAGS.milestones)
    command = shlex.join(['python', 'scripts/sweep.py', *sys.argv[1:]])
    failed = sweep.run_sweep(FLAGS.root, recipe, grid, seeds, make_engine(), milestones, command)
    if failed:
        sys.stderr.write(
            f'{len(failed)} trial{"s" * (len(failed) > 1)} failed ({", ".join(failed)}); '
            'run the same command to retry them\n'
        )
        return 1
    return 0


if __name__ == '__main__':
    define_flags()
    errors.run_program(main, FLAGS, stop_hint='; run the same command to resume')
