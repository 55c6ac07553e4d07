"""The leading optimisers written natively beside their plug-in originals: each native's
largest difference from its reference (float32 and float64, 30 steps of 64 at the defaults,
all 784 pixels) and the seconds per model-epoch of both at K = 1 and K = 15 models (15
seeds in one batch), from interleaved rounds in one process, medians and ratios.

    python benchmarks/bench_natives.py [--rounds 3] [--tiny] [--out DIR]

An epoch's seconds are those of a steady epoch of a few steps (--steps, the second of two),
scaled to the 750 steps of the exercise's epoch: SOAP's and Shampoo's factorisations make
whole epochs at K = 15 take minutes.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace

import torch
from benchmark_args import args_and_split, steady_epoch_seconds, write_results

from stochopt import Config, fit
from stochopt.conformance import REFERENCE_BATCH, _reference_run, crop, reference_data
from stochopt.optim import get_rule

PAIRS = [("adopt", "adopt:ADOPT"), ("ademamix", "pytorch_optimizer:AdEMAMix"),
         ("mars", "pytorch_optimizer:MARS"), ("soap", "pytorch_optimizer:SOAP"),
         ("shampoo", "pytorch_optimizer:Shampoo"), ("kron", "kron_torch:Kron")]
EPOCH_STEPS = 48_000 // 64


def reference_gap(name: str, split, steps: int, dtype: torch.dtype) -> float:
    """The largest |native - reference| of the weights after ``steps`` steps of 64."""
    data = reference_data(split, dtype, steps)
    carry: dict = {}
    fit([Config(name, epochs=1, batch_size=REFERENCE_BATCH, schedule="constant", seed=3)],
        data, carry=carry)
    trained, _ = _reference_run(get_rule(name), {}, data, 3)
    return (carry["Wt"][0, 0].mT - trained).abs().max().item()


def main() -> int:
    args, split = args_and_split(__doc__)
    steps = {1: 2, 2: 2} if args.tiny else {1: 20, 15: 5}
    pairs = PAIRS[3:5] if args.tiny else PAIRS
    if args.tiny:  # the images' centre: the test's seconds
        split = replace(split, X_train=crop(split.X_train, 100), X_val=crop(split.X_val, 100),
                        X_test=crop(split.X_test, 100))
    gaps = {name: {str(d)[6:]: reference_gap(name, split, 5 if args.tiny else 30, d)
                   for d in (torch.float32, torch.float64)} for name, _ in pairs}
    cases = {(name, k): [Config(name, epochs=1, batch_size=64, seed=s) for s in range(k)]
             for pair in pairs for name in pair for k in steps}
    times: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):  # interleaved: each round times every case once
        for (name, k), configs in cases.items():
            part = replace(split, X_train=split.X_train[:steps[k] * 64],
                           y_train=split.y_train[:steps[k] * 64])
            t0 = time.perf_counter()
            seconds = steady_epoch_seconds(part, configs)
            times[name, k].append(seconds / steps[k] * EPOCH_STEPS / k)
            print(f"  {name} K={k}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    for native, plugin in pairs:
        for k in steps:
            a, b = (statistics.median(times[n, k]) for n in (native, plugin))
            rows.append({"native": native, "plugin": plugin, "K": k,
                         "gap_float32": gaps[native]["float32"],
                         "gap_float64": gaps[native]["float64"],
                         "native_seconds_per_model_epoch": a,
                         "plugin_seconds_per_model_epoch": b, "plugin_over_native": b / a,
                         "native_all": " ".join(f"{x:.3f}" for x in times[native, k]),
                         "plugin_all": " ".join(f"{x:.3f}" for x in times[plugin, k])})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, "
          f"{args.rounds} rounds")
    print(f"{'native':<10} {'plug-in':<28} {'K':>3} {'|gap| f32':>10} {'|gap| f64':>10} "
          f"{'native s':>9} {'plug-in s':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['native']:<10} {r['plugin']:<28} {r['K']:>3} {r['gap_float32']:>10.1e} "
              f"{r['gap_float64']:>10.1e} {r['native_seconds_per_model_epoch']:>9.3f} "
              f"{r['plugin_seconds_per_model_epoch']:>10.3f} {r['plugin_over_native']:>6.2f}")
    write_results(args.out, "bench_natives", rows, rounds=args.rounds, steps=steps,
                  tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
