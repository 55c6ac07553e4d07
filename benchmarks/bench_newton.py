"""How close to Newton? f - f* per step on the full-batch problem (MNIST's 48,000 training
images, weight decay 1e-4, float64, f* certified by Newton-CG) of the Kronecker-factored
preconditioners, beside Newton-CG's own iterates, gradient descent and Adam.

    python benchmarks/bench_newton.py [--steps 300] [--out benchmarks/results]

The Hessian of softmax regression is E[(diag p - p p^T) (x) x x^T], a Kronecker product in
expectation, so SOAP, Shampoo and PSGD Kron approximate Newton's step here. Each first-order
method takes full-batch steps at each lr of a log grid around its default (--lr-factors) and
its best lr is the one that gets lowest; the table gives the steps to f - f* < 1e-6 (and
1e-3) and f - f* after --steps. SOAP, Shampoo and Kron run as plug-ins (pytorch-optimizer's
SOAP and Shampoo, kron-torch's Kron, one instance, their own weight decay off: the objective's
L2 is in the gradient, as for every run here). Writes bench_newton.{csv,json} and
newton.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from benchmark_args import tiny_split, write_results  # beside this file

from stochopt.data import load_split
from stochopt.files import save_figure
from stochopt.optimum import cached_optimum
from stochopt.train import Config, fit

METHODS = {  # name -> (optimizer spec, its settings)
    "gradient descent": ("sgd", {}),
    "adam": ("adam", {}),
    "soap": ("pytorch_optimizer:SOAP", {"opt_weight_decay": 0.0}),
    "shampoo": ("pytorch_optimizer:Shampoo", {}),
    "kron": ("kron_torch:Kron", {"preconditioner_update_probability": 1.0}),
}
TARGETS = (1e-3, 1e-6)


def first_step_below(curve: list[float], target: float) -> int | None:
    """The first step (1-based) whose f - f* is below ``target``."""
    return next((i + 1 for i, v in enumerate(curve) if v < target), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr-factors", default="0.1,1,10", help="the lr grid, x each default")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--tiny", action="store_true", help="a tenth of the data, 5 steps")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    split = load_split(os.environ.get("STOCHOPT_DATA"), dtype=torch.float64)
    if args.tiny:
        split = tiny_split(split)
        args.steps, args.lr_factors = 5, "1"
    N = len(split.X_train)
    optimum = cached_optimum(split, args.weight_decay)
    f_star = optimum.objective
    newton = [f - f_star for f, _ in optimum.history[1:]]  # after each Newton-CG iteration
    print(f"f* = {f_star:.12f} (Newton-CG, certified gap {optimum.certified_gap:.1e}, "
          f"{optimum.iterations} iterations)\n")
    curves: dict[str, list[float]] = {"newton-cg": newton}
    rows = [{"method": "newton-cg", "optimizer": "stochopt.optimum.newton", "lr": "",
             "seconds_per_step": optimum.seconds / max(1, optimum.iterations),
             "final": newton[-1], **{f"steps_to_{t:g}": first_step_below(newton, t)
                                     for t in TARGETS}}]
    for name in args.methods.split(","):
        spec, settings = METHODS[name]
        default = Config(spec, hyper=settings).base_lr
        best = None
        for factor in (float(x) for x in args.lr_factors.split(",")):
            config = Config(spec, lr=default * factor, batch_size=N, epochs=args.steps,
                            schedule="constant",
                            hyper={**settings, "weight_decay": args.weight_decay})
            started = time.perf_counter()
            (record,) = fit([config], split, f_star=[f_star])
            seconds = (time.perf_counter() - started) / args.steps
            curve = [r["suboptimality"] for r in record.rows]
            final = curve[-1] if record.status == "ok" else math.inf
            print(f"{name:<18} lr {config.base_lr:<10.3g} f - f* after {len(curve)} steps: "
                  f"{final:.3e}", flush=True)
            if best is None or final < best[0]:
                best = (final, config.base_lr, curve, seconds)
        assert best is not None
        final, lr, curve, seconds = best
        curves[name] = curve
        rows.append({"method": name, "optimizer": spec, "lr": lr, "seconds_per_step": seconds,
                     "final": final, **{f"steps_to_{t:g}": first_step_below(curve, t)
                                        for t in TARGETS}})
    print(f"\n{'method':<18} {'lr':>10} {'to 1e-3':>8} {'to 1e-6':>8} {'f - f* at end':>14}")
    for r in rows:
        print(f"{r['method']:<18} {r['lr'] or '':>10} {r['steps_to_0.001'] or '-':>8} "
              f"{r['steps_to_1e-06'] or '-':>8} {r['final']:>14.3e}")
    write_results(args.out, "bench_newton", rows, f_star=f_star, curves=curves,
                  steps=args.steps, weight_decay=args.weight_decay)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.semilogy(range(1, len(curve) + 1), [max(v, 1e-16) for v in curve], label=name,
                    marker="o" if name == "newton-cg" else None, lw=1.5)
    ax.axhline(1e-6, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="full-batch step (Newton-CG: iteration)", ylabel="f - f*",
           title=f"MNIST softmax regression, wd {args.weight_decay:g}, best lr of each")
    ax.legend()
    save_figure(Path(args.out) / "newton.png", fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
