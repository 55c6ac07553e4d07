"""Where does an epoch of stochopt stand? One process, the real data, medians and ratios.

    python benchmarks/bench_epoch.py [--repeats 3] [--out benchmarks/results]

(a) the exercise's own loop: DataLoader over a per-sample Dataset with ToTensor-style
    conversion, SubsetRandomSampler, loss and accuracy recomputed (and read) after every step
(b) idiomatic PyTorch: in-memory tensors, nn.Linear(784, 10, bias=False), F.cross_entropy,
    autograd, torch.optim.SGD(momentum=0.9), loss read after every step
(c) scikit-learn: SGDClassifier(loss="log_loss") for one epoch (and, with --lbfgs,
    LogisticRegression(lbfgs) to convergence)
(d) stochopt: an epoch of momentum-SGD with the exercise's per-step metrics (after the step),
    the median of the epochs of --repeats runs of --epochs epochs
(e) the roofline: the two full passes over the training matrix an epoch needs at least
(g) the per-configuration cost of a K = 1, 8, 64 sweep at batch 64 (epochs as in (d))

(a) and (b) are timed on --steps steps and scaled to a whole epoch (said in the table).
Nothing here is a test: timings vary with the machine's load.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stochopt.data import load_split
from stochopt.files import write_csv, write_json
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
    """(b): seconds per epoch (timed on ``steps``), or the time to ``target`` val accuracy."""
    X, y = split.X_train, split.y_train
    model = torch.nn.Linear(784, 10, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    done = 0
    for epoch in range(epochs):
        for idx in torch.randperm(len(X), generator=g).split(batch_size):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            done += 1
            if steps is not None and done == steps:
                return (time.perf_counter() - t) / steps * math.ceil(len(X) / batch_size)
        sched.step()
        if target is not None:
            with torch.no_grad():
                acc = 100 * (model(split.X_val).argmax(1) == split.y_val).float().mean().item()
            if acc >= target:
                return time.perf_counter() - t, epoch + 1
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


def epoch_seconds(split, configs: list[Config], args) -> float:
    """Median epoch time over ``--repeats`` runs of ``--epochs`` epochs each (the first
    epoch of a run also pays for allocating its buffers; the median is a steady epoch)."""
    for c in configs:
        c.epochs = args.epochs
    return statistics.median(r["seconds"] for _ in range(args.repeats)
                             for r in fit(configs, split)[0].rows)


def roofline(split, repeats: int) -> float:
    """(e): one forward and one backward pass over the whole training matrix."""
    X, y = split.X_train, split.y_train
    W = torch.zeros(784, 10)
    R = residuals(logits(W, X), one_hot(y, 10, X.dtype))
    return median_time(lambda: (logits(W, X), xt_r(X, R)), repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=150, help="steps timed for (a) and (b)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per timed run of (d), (g)")
    p.add_argument("--target", type=float, default=92.0, help="validation accuracy for (f)")
    p.add_argument("--max-epochs", type=int, default=15, help="epochs allowed to reach target")
    p.add_argument("--sweep-k", default="1,8,64")
    p.add_argument("--lbfgs", action="store_true", help="also LogisticRegression to convergence")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (for the test)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    if args.tiny:
        args.repeats, args.steps, args.epochs, args.max_epochs, args.sweep_k = 1, 5, 1, 1, "1,2"
    torch.manual_seed(0)
    split = load_split(os.environ.get("STOCHOPT_DATA"))
    rows: list[dict] = []

    def add(name, seconds, note=""):
        rows.append({"what": name, "seconds": seconds, "note": note})
        print(f"{name:<52} {seconds:10.4f} s  {note}", flush=True)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(split.X_train)} train examples\n")
    add("(a) exercise DataLoader loop, epoch @64",
        statistics.median(exercise_loop(split, 64, args.steps) for _ in range(args.repeats)),
        f"scaled from {args.steps} steps")
    add("(b) idiomatic torch autograd, epoch @64",
        statistics.median(idiomatic_torch(split, 64, args.steps) for _ in range(args.repeats)),
        f"scaled from {args.steps} steps")

    from sklearn.linear_model import LogisticRegression, SGDClassifier

    Xn, yn = split.X_train.numpy(), split.y_train.numpy()
    add("(c) sklearn SGDClassifier(log_loss), 1 epoch", median_time(
        lambda: SGDClassifier(loss="log_loss", max_iter=1, tol=None).fit(Xn, yn), args.repeats))
    if args.lbfgs:
        add("(c) sklearn LogisticRegression lbfgs, converged",
            median_time(lambda: LogisticRegression(max_iter=1000).fit(Xn, yn), 1))
    for bs in (32, 64, 128, 512):
        fit(Config(epochs=1, batch_size=bs), split)  # warm-up
        add(f"(d) stochopt momentum, epoch @{bs}",
            epoch_seconds(split, [Config(batch_size=bs)], args), "with per-step metrics")
    roof = roofline(split, args.repeats)
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

    k1 = None
    for K in (int(k) for k in args.sweep_k.split(",")):
        configs = [Config(batch_size=64, lr=0.01 * (1 + i)) for i in range(K)]
        per = epoch_seconds(split, configs, args) / K
        k1 = k1 or per
        add(f"(g) sweep K={K}: per configuration, epoch @64", per, f"{k1 / per:.1f}x below K=1")

    d64 = next(r["seconds"] for r in rows if r["what"].startswith("(d)") and "@64" in r["what"])
    a64 = rows[0]["seconds"]
    b64 = rows[1]["seconds"]
    ratios = {"(a)/(d) exercise loop vs stochopt @64": a64 / d64,
              "(b)/(d) idiomatic torch vs stochopt @64": b64 / d64,
              "(d)/(e) stochopt @64 vs roofline": d64 / roof}
    print()
    for name, r in ratios.items():
        print(f"{name:<52} {r:10.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench_epoch.csv", rows, ["what", "seconds", "note"])
    write_json(out / "bench_epoch.json", {"rows": rows, "ratios": ratios,
                                          "torch": torch.__version__,
                                          "threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
