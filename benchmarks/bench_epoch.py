"""Where does an epoch of stochopt stand? One process, the real data, medians and ratios.

    python benchmarks/bench_epoch.py [--rounds 3] [--out benchmarks/results]

(a) the exercise's own loop: DataLoader over a per-sample Dataset with ToTensor-style
    conversion, SubsetRandomSampler, loss and accuracy recomputed (and read) after every step
(b) idiomatic PyTorch: in-memory tensors, nn.Linear(784, 10, bias=False), F.cross_entropy,
    autograd, torch.optim.SGD(momentum=0.9), the batch's loss and accuracy after the step
(c) scikit-learn: SGDClassifier(loss="log_loss") for one epoch (and, with --lbfgs,
    LogisticRegression(lbfgs) to convergence)
(d) stochopt: an epoch of momentum-SGD with the exercise's post-step metrics, one run (K=1),
    beside (b) and a JAX + optax epoch jit-compiled as one lax.scan (same rule, same
    metrics; benchmarks/jax_loop.py), at batch sizes 32 to 512, interleaved round by round
(e) the roofline: the two full passes over the training matrix an epoch needs at least
(f) time to a validation accuracy
(g) the per-configuration cost of K = 1, 15, 64 models at batch 64, beside JAX's vmap of
    the scan, and the compute floor: three products of 2 B d C FLOPs per step and model at
    the matrix-product peak of this machine, measured in every round beside the K runs

(a) is timed on --steps steps and scaled to a whole epoch (said in the table). JAX's
compile time is printed, not counted. Beside the ratios of medians, JAX against stochopt
round by round: the range of the rounds' ratios and how many rounds stochopt won (in the
json: ``paired``), which says whether a ratio stands out of the machine's drift. Nothing
here is a test: timings vary with the machine's load, so compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax_loop  # the benchmarks' own JAX loop, beside this file
import numpy as np
import torch
import torch.nn.functional as F
from benchmark_args import machine, steady_epoch_seconds, tiny_split, write_results

from stochopt.cli import huge_pages
from stochopt.data import load_split
from stochopt.model import logits, one_hot, residuals, xt_r
from stochopt.train import Config, fit


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def exercise_loop(split, batch_size: int, steps: int) -> float:
    """(a): seconds per epoch, timed on ``steps`` steps."""
    images = (split.X_train.numpy() * 255).round().astype(np.uint8).reshape(-1, 28, 28)
    labels = split.y_train.numpy()

    from PIL import Image

    class Digits(torch.utils.data.Dataset):
        """As torchvision's MNIST: a PIL image per sample, then ToTensor()."""

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            pic = Image.fromarray(images[i], mode="L")
            # ToTensor(): PIL uint8 HxW -> float 1xHxW in [0, 1]
            x = torch.from_numpy(np.array(pic, copy=True)).view(1, 28, 28).float().div(255)
            return x, int(labels[i])

    sampler = torch.utils.data.SubsetRandomSampler(range(len(images)))
    loader = torch.utils.data.DataLoader(Digits(), batch_size=batch_size, sampler=sampler)
    W, m = torch.zeros(784, 10), torch.zeros(784, 10)
    t = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        x = x.view(len(x), -1)
        P = torch.softmax(x @ W, dim=1)
        g = -(x.T @ (F.one_hot(y, 10).float() - P)) / len(x)
        m = 0.9 * m + g
        W = W - 0.1 * m
        Z = x @ W
        float(F.cross_entropy(Z, y)), float((Z.argmax(1) == y).float().mean())
    return (time.perf_counter() - t) / steps * math.ceil(len(images) / batch_size)


def idiomatic_torch(split, batch_size: int, steps: int | None, epochs: int = 1,
                    target: float | None = None):
    """(b): seconds per epoch (timed on ``steps`` steps when given), or the time to
    ``target`` validation accuracy. After each step the batch's loss and accuracy of the
    updated model, as the exercise asks, kept as tensors and read once per epoch."""
    X, y = split.X_train, split.y_train
    model = torch.nn.Linear(X.shape[1], 10, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    done = 0
    for epoch in range(epochs):
        metrics = []
        for idx in torch.randperm(len(X), generator=g).split(batch_size):
            xb, yb = X[idx], y[idx]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                Z = model(xb)
                metrics.append(torch.stack([F.cross_entropy(Z, yb),
                                            (Z.argmax(1) == yb).float().mean()]))
            done += 1
            if steps is not None and done == steps:
                torch.stack(metrics).mean(0).tolist()
                return (time.perf_counter() - t) / steps * math.ceil(len(X) / batch_size)
        torch.stack(metrics).mean(0).tolist()
        sched.step()
        if target is not None:
            with torch.no_grad():
                acc = 100 * (model(split.X_val).argmax(1) == split.y_val).float().mean().item()
            if acc >= target:
                return time.perf_counter() - t, epoch + 1
    if steps is None and target is None:
        return (time.perf_counter() - t) / epochs
    return math.nan, None


def stochopt_to_target(split, target: float, epochs: int, **config):
    reached = {}

    def on_epoch(epoch, histories):
        if "t" not in reached and histories[0].rows[-1]["val_acc"] >= target:
            reached["t"] = time.perf_counter() - start
            reached["epoch"] = epoch

    start = time.perf_counter()
    fit(Config(epochs=epochs, **config), split, on_epoch=on_epoch)
    return reached.get("t", math.nan), reached.get("epoch")


def roofline(split, repeats: int) -> float:
    """(e): one forward and one backward pass over the whole training matrix."""
    X, y = split.X_train, split.y_train
    W = torch.zeros(784, 10)
    R = residuals(logits(W, X), one_hot(y, 10, X.dtype))
    return median_time(lambda: (logits(W, X), xt_r(X, R)), repeats)


def gemm_peak(repeats: int, n: int = 1536) -> float:
    """FLOP/s of a large float32 matrix product, this machine's attainable peak."""
    A, B = torch.rand(n, n), torch.rand(n, n)
    A @ B
    return 2 * n**3 / median_time(lambda: A @ B, repeats)


def rounds_against(theirs: list[float], ours: list[float]) -> dict[str, float | int]:
    """Their seconds over ours in each round: the lowest and highest such ratio, and in how
    many of the rounds ours was the faster."""
    each = [t / o for t, o in zip(theirs, ours, strict=True)]
    return {"low": min(each), "high": max(each), "won": sum(r > 1 for r in each),
            "rounds": len(each)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians of them")
    p.add_argument("--steps", type=int, default=150, help="steps timed for (a)")
    p.add_argument("--target", type=float, default=92.0, help="validation accuracy for (f)")
    p.add_argument("--max-epochs", type=int, default=15, help="epochs allowed to reach target")
    p.add_argument("--batch-sizes", default="32,64,128,256,512")
    p.add_argument("--sweep-k", default="1,15,64")
    p.add_argument("--lbfgs", action="store_true", help="also LogisticRegression to convergence")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (for the test)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    # torch's allocations of 2 MB and more on huge pages, as the stochopt command asks; read
    # at torch's first such allocation, which is still ahead
    huge_pages()
    torch.manual_seed(0)
    split = load_split(os.environ.get("STOCHOPT_DATA"))
    if args.tiny:
        args.rounds, args.steps, args.max_epochs = 1, 5, 1
        args.batch_sizes, args.sweep_k = "64,512", "1,2"
        split = tiny_split(split)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    ks = [int(k) for k in args.sweep_k.split(",")]
    rows: list[dict] = []

    def add(name, seconds, note=""):
        rows.append({"what": name, "seconds": seconds, "note": note})
        print(f"{name:<52} {seconds:10.4f} s  {note}", flush=True)

    ran_on = machine()
    print(f"{ran_on['cpu']}, torch {ran_on['torch']}, {ran_on['threads']} threads, "
          f"{len(split.X_train)} train examples\n")
    add("(a) exercise DataLoader loop, epoch @64",
        statistics.median(exercise_loop(split, 64, args.steps) for _ in range(args.rounds)),
        f"scaled from {args.steps} steps")

    from sklearn.linear_model import LogisticRegression, SGDClassifier

    Xn, yn = split.X_train.numpy(), split.y_train.numpy()
    add("(c) sklearn SGDClassifier(log_loss), 1 epoch", median_time(
        lambda: SGDClassifier(loss="log_loss", max_iter=1, tol=None).fit(Xn, yn), args.rounds))
    if args.lbfgs:
        add("(c) sklearn LogisticRegression lbfgs, converged",
            median_time(lambda: LogisticRegression(max_iter=1000).fit(Xn, yn), 1))

    # (d) and (g): every contender once per round, round after round, so that the machine's
    # drift falls on all of them alike; the medians over the rounds
    no_jax = jax_loop.available()
    jax_epochs: dict[tuple[int, int | None], jax_loop.JaxEpoch] = {}
    if no_jax is None:
        for bs in sizes:
            jax_epochs[bs, None] = jax_loop.JaxEpoch(Xn, yn, bs)
        for K in ks:
            jax_epochs[64, K] = jax_loop.JaxEpoch(Xn, yn, 64, K)
        compile_s = statistics.median(j.compile_seconds for j in jax_epochs.values())
        print(f"JAX {__import__('jax').__version__}: compiling a scan took {compile_s:.1f} s "
              "(median), not counted below\n")
    times: dict[str, list[float]] = {}

    # (g)'s floor: three products of 2 B d C FLOPs for each step of an epoch at batch 64
    floor_flops = math.ceil(len(split.X_train) / 64) * 3 * 2 * 64 * split.X_train.shape[1] \
        * split.n_classes

    def sweep(K: int) -> list[Config]:
        return [Config(batch_size=64, lr=0.01 * (1 + i)) for i in range(K)]

    def timed(name: str, seconds: Callable[..., float], *args: object, per: int = 1) -> None:
        """This round's figure of one contender, ``seconds(*args) / per``, taken on a
        collected heap (as ``timeit`` turns the collector off): otherwise a full collection
        of the benchmark's own objects, JAX's among them, lands inside one timed epoch of
        most runs (0.34-0.42 s for an epoch of 0.12-0.18 s), on whichever contender runs."""
        gc.collect()
        times.setdefault(name, []).append(seconds(*args) / per)

    for _ in range(args.rounds):
        for bs in sizes:
            timed(f"stochopt @{bs}", steady_epoch_seconds, split, [Config(batch_size=bs)])
            if no_jax is None:
                timed(f"jax @{bs}", jax_epochs[bs, None].epoch_seconds)
            timed(f"torch @{bs}", idiomatic_torch, split, bs, None)
        for K in ks:
            timed(f"stochopt K={K}", steady_epoch_seconds, split, sweep(K), per=K)
            if no_jax is None:
                timed(f"jax K={K}", jax_epochs[64, K].epoch_seconds, per=K)
        # the floor in the same round: the machine's peak drifts as its epochs do (101 and
        # 143 GFLOP/s an hour apart), so each round's K runs are set against its own
        times.setdefault("floor", []).append(floor_flops / gemm_peak(3))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios: dict[str, float] = {}
    for bs in sizes:
        add(f"(d) stochopt momentum, epoch @{bs}", med[f"stochopt @{bs}"], "K=1, post-step metrics")
        add(f"(d) JAX+optax lax.scan, epoch @{bs}", med.get(f"jax @{bs}", math.nan), no_jax or "")
        add(f"(b) torch.optim + autograd, epoch @{bs}", med[f"torch @{bs}"])
        ratios[f"(d) JAX/stochopt @{bs}"] = med.get(f"jax @{bs}", math.nan) / med[f"stochopt @{bs}"]
        ratios[f"(b)/(d) torch.optim/stochopt @{bs}"] = med[f"torch @{bs}"] / med[f"stochopt @{bs}"]
    roof = roofline(split, args.rounds)
    add("(e) roofline: X W and X^T R over the train set", roof)

    t_b, e_b = idiomatic_torch(split, 64, None, args.max_epochs, args.target)
    add(f"(f) time to {args.target}% val: idiomatic torch", t_b, f"epoch {e_b}")
    t_d, e_d = stochopt_to_target(split, args.target, args.max_epochs, batch_size=64)
    add(f"(f) time to {args.target}% val: stochopt momentum", t_d, f"epoch {e_d}")
    t_a, e_a = stochopt_to_target(split, args.target, args.max_epochs, optimizer="adam",
                                  batch_size=64)
    add(f"(f) time to {args.target}% val: stochopt adam", t_a, f"epoch {e_a}")
    clf = SGDClassifier(loss="log_loss", random_state=0)
    start, t_c, e_c = time.perf_counter(), math.nan, None
    for epoch in range(args.max_epochs):
        clf.partial_fit(Xn, yn, classes=np.arange(10))
        if 100 * clf.score(split.X_val.numpy(), split.y_val.numpy()) >= args.target:
            t_c, e_c = time.perf_counter() - start, epoch + 1
            break
    add(f"(f) time to {args.target}% val: sklearn SGDClassifier", t_c, f"epoch {e_c}")

    add("(g) compute floor per configuration, epoch @64", med["floor"],
        f"3 products per step at {floor_flops / med['floor'] / 1e9:.0f} GFLOP/s, measured "
        "in every round")
    for K in ks:
        per = med[f"stochopt K={K}"]
        add(f"(g) stochopt K={K}: per configuration, epoch @64", per,
            f"{med[f'stochopt K={ks[0]}'] / per:.1f}x below K={ks[0]}")
        add(f"(g) JAX vmap K={K}: per configuration, epoch @64", med.get(f"jax K={K}", math.nan),
            no_jax or "")
        ratios[f"(g) JAX vmap/stochopt K={K}"] = med.get(f"jax K={K}", math.nan) / per
        # the median of each round's ratio to its own floor
        ratios[f"(g) stochopt/floor K={K}"] = statistics.median(
            k / f for k, f in zip(times[f"stochopt K={K}"], times["floor"], strict=True))

    # each round against itself: the machine's speed moves between rounds (the same epoch
    # 0.09-0.19 s within minutes), so a ratio of medians can sit inside that noise; the
    # per-round ratios' range and how many rounds each side won say whether it does
    paired = {at: rounds_against(times[f"jax {at}"], times[f"stochopt {at}"])
              for at in [f"@{bs}" for bs in sizes] + [f"K={K}" for K in ks]
              if f"jax {at}" in times}
    d64 = med["stochopt @64"] if "stochopt @64" in med else med[f"stochopt @{sizes[0]}"]
    ratios["(a)/(d) exercise loop vs stochopt @64"] = rows[0]["seconds"] / d64
    ratios["(d)/(e) stochopt @64 vs roofline"] = d64 / roof
    print()
    for name, r in ratios.items():
        print(f"{name:<52} {r:10.2f}x")
    if paired:
        print("\nJAX/stochopt round by round (above 1: stochopt faster in that round)")
    for at, p in paired.items():
        print(f"  {at:<8} {p['low']:.2f}-{p['high']:.2f}x, "
              f"stochopt faster in {p['won']} of {p['rounds']} rounds")
    write_results(args.out, "bench_epoch", rows, ratios=ratios, rounds=times, paired=paired,
                  jax=no_jax or "yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
