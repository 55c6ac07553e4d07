"""``stochopt train``: one configuration, its history, weights and figures."""

from __future__ import annotations

import argparse
import sys

from ..files import lock_out, prepare_out
from ..study.artefacts import write_train
from ..study.experiment import FStarSource
from ..train import Checkpoint, fit
from .common import configs_from_args, load_data, progress


def cmd_train(args: argparse.Namespace) -> int:
    (config,) = configs_from_args(args)
    split = load_data(args, [config])
    out = prepare_out(args.out)  # only once all input is known good: a refusal writes nothing
    lock_out(out)
    star = FStarSource(split, args.optimum, progress=not args.quiet)(config)
    bar, on_epoch = progress(args, config.epochs, f"{config.optimizer} bs={config.batch_size}",
                              lines=True)
    checkpoint = Checkpoint.every_epochs(out / "checkpoint.pt", args.checkpoint_every)
    (record,) = fit(config, split, f_star=[star], on_epoch=on_epoch, checkpoint=checkpoint)
    bar.close()
    write_train(out, record, split, star)
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)  # the run's files are complete
    if record.status == "diverged":
        print(f"stochopt: the run diverged (non-finite or exploding loss) at epoch "
              f"{record.diverged_epoch}; try a smaller --lr. Results so far are in {out}",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"test loss {record.test_loss:.4f}  test accuracy {record.test_acc:.2f}%  "
              f"-> {out}")
    return 0
