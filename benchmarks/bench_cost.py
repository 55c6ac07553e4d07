"""Each run's own cost in a mixed batch: sgd and muon trained together (one batch of two
models) against each trained alone, interleaved rounds in one process; each run's seconds
per epoch (results.csv's ``seconds``: its share of the shared products plus its own
update), medians and the ratio together / alone, and the check that a batch's runs sum to
its wall time.

    python benchmarks/bench_cost.py [--rounds 3] [--tiny] [--out DIR]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from benchmark_args import args_and_split

from stochopt import Config, fit


def per_epoch(record) -> float:
    return sum(r["seconds"] for r in record.rows) / len(record.rows)


def main() -> None:
    args, split = args_and_split(__doc__)
    base = {"epochs": 1, "batch_size": 64}
    together: dict[str, list[float]] = {"sgd": [], "muon": []}
    alone: dict[str, list[float]] = {"sgd": [], "muon": []}
    sums = []
    for _ in range(args.rounds):  # interleaved: each round runs every case once
        records = fit([Config("sgd", **base), Config("muon", **base)], split)
        for r in records:
            together[r.config.optimizer].append(per_epoch(r))
        sums.append(sum(r.rows[0]["seconds"] for r in records) / records[0].rows[0][
            "batch_seconds"])
        for name in alone:
            (record,) = fit(Config(name, **base), split)
            alone[name].append(per_epoch(record))
    rows = [{"optimizer": name, "together": statistics.median(together[name]),
             "alone": statistics.median(alone[name]),
             "ratio": statistics.median(together[name]) / statistics.median(alone[name])}
            for name in together]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, "
          f"{args.rounds} rounds")
    for r in rows:
        print(f"{r['optimizer']:<5} in a batch with the other {r['together']:.3f} s/epoch, "
              f"alone {r['alone']:.3f} s/epoch: {r['ratio']:.2f}x")
    print(f"runs' seconds / the batch's wall time: {' '.join(f'{x:.6f}' for x in sums)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cost.json").write_text(json.dumps(
        {"rows": rows, "sum_over_wall": sums, "tiny": args.tiny}, indent=2) + "\n")


if __name__ == "__main__":
    main()
