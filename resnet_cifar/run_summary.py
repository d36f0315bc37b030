"""A run's last lines: the step it reached, its precision (the last eval's and the best), the time
this command took, and where its checkpoint and eval report are. The command line prints them
after training, once the weights digest is logged:

    summary: runs/quickstart at step 300 of 300 after 0:02:35 (this command); checkpoint runs/quickstart/ckpt-300
    summary: test precision 0.4140 at step 300 (the last eval), best 0.4140; report runs/quickstart/eval/metrics.json
"""

import datetime
import os

from resnet_cifar import checkpoint_index, evaluation
from resnet_cifar.errors import UserError


def duration(seconds):
    """'2:35:00', with the days in front from 24 hours on: '1 day, 9:00:13'."""
    return str(datetime.timedelta(seconds=round(seconds)))


def lines(config, step, seconds):
    """The summary of the run `config` at `step`, `seconds` after this command started. The eval
    files are read checked, as an eval reads them: a damaged one is named in the second line (the
    training it follows went well; the next eval refuses the file)."""
    newest = (checkpoint_index.checkpoints(config.log_root) or ['none'])[0]
    where = f'{config.log_root} at step {step} of {config.hparams.train_steps}'
    first = f'summary: {where} after {duration(seconds)} (this command); checkpoint {newest}'
    folder = evaluation.report_dir(config)
    history = os.path.join(folder, evaluation.HISTORY)
    try:
        evals = evaluation.read_history(folder) if os.path.exists(history) else []
        best = evaluation.read_best_precision(folder)
    except UserError as e:
        return [first, f'summary: no eval to report: {e.line()}']
    if not evals:
        return [first, f'summary: no {config.eval_split} eval of this run yet']
    last = evals[-1]
    report = os.path.join(folder, evaluation.METRICS)
    return [
        first,
        f'summary: {last["split"]} precision {last["precision"]:.4f} at step {last["step"]} (the last eval), '
        f'best {best:.4f}; report {report}, every eval in {history}',
    ]
