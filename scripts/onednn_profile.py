"""Where a training step's time goes among oneDNN's kernels: a few compiled training steps of a
preset in a dtype, with ONEDNN_VERBOSE=profile_exec, the execution times oneDNN reports summed by
primitive kind, implementation, pass and data type, per step. Or another program's verbose output
summed the same way, such as the PyTorch reference's:

    python scripts/onednn_profile.py --dtype=bfloat16 [--hparams=resnet32] [--steps=5]
    ONEDNN_VERBOSE=profile_exec python ../shared/bench/torch_reference.py --dtype=bfloat16 --warmup=0 --steps=5 > t.log
    python scripts/onednn_profile.py --log=t.log --steps=5

Times of kernels that TensorFlow runs at once on different cores add up to more than the step.
"""

import collections
import ctypes
import os
import tempfile

from absl import app, flags

from resnet_cifar import choices, errors, presets, startup

flags.DEFINE_string('hparams', 'resnet32', 'A preset or a JSON file, as resnet_main.py --hparams.')
flags.DEFINE_enum('dtype', 'float32', list(choices.DTYPE_POLICIES), 'As resnet_main.py --dtype.')
flags.DEFINE_integer('steps', 5, 'Profiled training steps (with --log: the steps the log holds).', lower_bound=1)
flags.DEFINE_integer('warmup', 3, 'Unprofiled steps first: tracing, allocation, primitive creation.', lower_bound=1)
flags.DEFINE_string('log', None, "Sum this file of oneDNN's verbose output instead of running steps.")
FLAGS = flags.FLAGS
MARK = 'onednn_profile: profiled steps start'


def _data_type(descriptor):
    """The data type of one of oneDNN's memory descriptors: 'src:bf16::blocked:acdb::f0' (a primitive's)
    or 'src_f32::blocked:ab:f0' (a matrix product's) -> 'bf16', 'f32'."""
    name, _, rest = descriptor.partition(':')
    return rest.split(':')[0] or name.rpartition('_')[2]


def summarize(lines, steps):
    """{(kind, implementation, pass, data types): [count, milliseconds]} per step, of oneDNN's
    `onednn_verbose,...,primitive,exec,cpu,KIND,IMPLEMENTATION,PASS,MEMORY,...,MS` lines after the
    last MARK (or all of them)."""
    marked = [i for i, line in enumerate(lines) if line.strip() == MARK]
    totals = collections.defaultdict(lambda: [0, 0.0])
    for line in lines[marked[-1] + 1 if marked else 0 :]:
        fields = line.split(',')
        if len(fields) < 10 or not fields[0].endswith('_verbose') or fields[2:4] != ['primitive', 'exec']:
            continue
        kind, implementation, pass_, memory = fields[5:9]
        types = sorted({_data_type(descriptor) for descriptor in memory.split()} - {'undef', ''})
        entry = totals[kind, implementation, pass_, '/'.join(types)]
        entry[0] += 1
        entry[1] += float(fields[-1])
    return {key: [count / steps, ms / steps] for key, (count, ms) in totals.items()}


def table(summary):
    """The summary as a Markdown table, the longest first, with each row's share of the time."""
    total = sum(ms for _, ms in summary.values()) or 1.0
    rows = ['| primitive | implementation | pass | data type | per step | ms per step | share |']
    rows.append('| --- | --- | --- | --- | --- | --- | --- |')
    for key, (count, ms) in sorted(summary.items(), key=lambda item: -item[1][1]):
        rows.append(f'| {" | ".join(key)} | {count:g} | {ms:.1f} | {100 * ms / total:.1f}% |')
    rows.append(f'| all | | | | {sum(c for c, _ in summary.values()):g} | {total:.1f} | 100% |')
    return '\n'.join(rows)


def profiled_steps():
    """oneDNN's verbose lines of FLAGS.steps training steps after FLAGS.warmup: its standard output
    (where oneDNN prints) goes to a file meanwhile, with MARK before the profiled steps."""
    from resnet_cifar import dtype_speed

    hps = presets.build_hparams(FLAGS.hparams)
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode='w+') as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            step = dtype_speed.warmed_step(FLAGS.dtype, hps, FLAGS.warmup)
            libc.fflush(None)
            os.write(1, f'{MARK}\n'.encode())
            for _ in range(FLAGS.steps):
                cost = step()
            float(cost)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return log.read().splitlines()


def main(argv):
    del argv
    if FLAGS.log:
        try:
            with open(FLAGS.log, encoding='utf-8', errors='replace') as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise errors.UserError(f'cannot read {FLAGS.log} ({e.strerror})', 'log') from None
    else:
        os.environ.setdefault('ONEDNN_VERBOSE', 'profile_exec')  # read when TensorFlow loads oneDNN
        startup.setup(num_gpus=0, command=True)
        lines = profiled_steps()
    summary = summarize(lines, FLAGS.steps)
    if not summary:
        raise errors.UserError('no oneDNN kernel ran (TF_ENABLE_ONEDNN_OPTS=0, or not an x86-64 CPU?)')
    print(table(summary))


if __name__ == '__main__':
    app.run(errors.exit_on_error(main, FLAGS))
