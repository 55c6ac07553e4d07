"""A plug-in's step against a native rule's: seconds per model-epoch of ``adam`` and
``torch.optim:Adam`` (the same update), at K = 1 and K = 8 models (8 seeds in one batch),
interleaved rounds in one process, medians and ratios.

    python benchmarks/bench_plugins.py [--rounds 3] [--tiny] [--out DIR]
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from benchmark_args import args_and_split

from stochopt import Config, fit


def main() -> None:
    args, split = args_and_split(__doc__)
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
