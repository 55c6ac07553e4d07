"""``stochopt zoo MODULE``: every optimiser MODULE exports, at its defaults, measured as
``compare`` measures, with ``zoo.csv`` saying which trained, which failed and which cannot
run here, and why."""

from __future__ import annotations

import argparse

from ..errors import StochoptError
from ..files import write_csv
from ..study.zoo import ZOO_COLUMNS, exported, sort_out, too_slow, zoo_rows
from .common import configs_from_args, load_data
from .study import study


def cmd_zoo(args: argparse.Namespace) -> int:
    names = exported(args.module)
    runnable, unsupported = sort_out(names)
    if not runnable:
        raise StochoptError(f"none of the {len(names)} optimizers of {args.module} can run "
                            "here (stochopt zoo lists them with their reasons only when one can)")
    measured: dict[str, float] = {}
    if args.max_epoch_seconds is not None:
        if not args.max_epoch_seconds > 0:
            raise StochoptError(f"--max-epoch-seconds must be positive, got "
                                f"{args.max_epoch_seconds}")
        args.optimizer = runnable[:1]
        batch = configs_from_args(args)[0].batch_size
        slow, measured = too_slow(runnable, load_data(args), batch, args.max_epoch_seconds)
        unsupported.update(slow)
        runnable = [spec for spec in runnable if spec not in slow]
        if not runnable:
            raise StochoptError(f"every optimizer of {args.module} is over the cap of "
                                f"{args.max_epoch_seconds:g} s per epoch")
    args.optimizer = runnable
    configs = configs_from_args(args)
    args.weight_images = 12  # the best twelve; a hundred images tell nothing
    if args.group_size is None:  # one optimizer's seeds per group: one that raises fails alone
        args.group_size = len({c.seed for c in configs})
    _, out, records, found = study(args, configs)
    rows = zoo_rows(names, unsupported, records, found.summary, measured)
    write_csv(out / "zoo.csv", rows, ZOO_COLUMNS)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("trained", "failed",
                                                                "unsupported")}
    if not args.quiet:
        print(f"{args.module}: {len(rows)} optimizers, " + ", ".join(
            f"{n} {s}" for s, n in counts.items()) + f" -> {out / 'zoo.csv'}")
    return 0 if counts["trained"] else 1
