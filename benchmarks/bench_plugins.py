"""A plug-in's step against a native rule's: seconds per model-epoch of ``adam`` and
``torch.optim:Adam`` (the same update), at K = 1 and K = 8 models (8 seeds in one batch),
interleaved rounds in one process, medians and ratios.

    python benchmarks/bench_plugins.py [--rounds 3] [--tiny] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stochopt import Config, fit, load_split
from stochopt.data import Split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tenth of the data, 1 round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    split = load_split()
    if args.tiny:
        n = len(split.X_train) // 10
        split = Split(split.X_train[:n], split.y_train[:n], split.X_val[:500],
                      split.y_val[:500], split.X_test[:500], split.y_test[:500])
        args.rounds = 1
    cases = {f"{name} K={k}": [Config(name, epochs=1, batch_size=64, seed=s)
                                for s in range(k)]
             for k in (1, 8) for name in ("adam", "torch.optim:Adam")}
    times: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):  # interleaved: each round runs every case once
        for case, configs in cases.items():
            t0 = time.perf_counter()
            fit(configs, split)
            times[case].append((time.perf_counter() - t0) / len(configs))
    rows = [{"what": c, "seconds_per_model_epoch": statistics.median(t),
             "all": " ".join(f"{x:.3f}" for x in t)} for c, t in times.items()]
    ratios = {f"plug-in / native, K={k}": statistics.median(times[f"torch.optim:Adam K={k}"])
              / statistics.median(times[f"adam K={k}"]) for k in (1, 8)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64")
    for r in rows:
        print(f"{r['what']:<24} {r['seconds_per_model_epoch']:.3f} s per model-epoch "
              f"({r['all']})")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_plugins.json").write_text(json.dumps(
        {"rows": rows, "ratios": ratios, "tiny": args.tiny}, indent=2) + "\n")


if __name__ == "__main__":
    main()
