"""Every optimiser of the registry on the exercise's problem: 10-epoch validation accuracy
at its defaults (batch 64, seed 0; all trained as one batch of models) and the seconds an
epoch takes when it trains alone (K = 1, batch 64, the median of --repeats epochs).

    python benchmarks/bench_rules.py [--repeats 3] [--out benchmarks/results] [--tiny]

Nothing here is a test: timings vary with the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmark_args import tiny_split, write_results

import stochopt
from stochopt.optim import RULES


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tiny", action="store_true",
                   help="1 epoch at batch 4000 on a tenth of the training examples")
    args = p.parse_args()
    split = stochopt.load_split()
    if args.tiny:  # the test suite's seconds: 50 epochs of 25 rules on all 48,000 took 9 s
        split = tiny_split(split)
    epochs, batch = (1, 4000) if args.tiny else (10, 64)
    names = [n for n in RULES if n != "toy-signsgd"]
    together = stochopt.fit([stochopt.Config(optimizer=n, epochs=epochs, batch_size=batch)
                             for n in names], split)
    rows = []
    for name, record in zip(names, together, strict=True):
        (alone,) = stochopt.fit(stochopt.Config(optimizer=name, batch_size=batch,
                                                epochs=1 if args.tiny else args.repeats),
                                split)
        last = record.rows[-1]
        rows.append({"optimizer": name, "reference": str(RULES[name].reference),
                     "lr": record.config.base_lr, "schedule": record.config.schedule_name,
                     "val_acc": last["val_acc"] if record.status == "ok" else float("nan"),
                     "status": record.status,
                     "seconds_per_epoch_k1": statistics.median(r["seconds"] for r in alone.rows)})
    for r in rows:
        print(f"{r['optimizer']:<20} {r['val_acc']:6.2f}%  {r['seconds_per_epoch_k1']:.3f} s/epoch"
              f"  ({r['reference']})")
    write_results(args.out, "bench_rules", rows, epochs=epochs, batch_size=batch,
                  tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
