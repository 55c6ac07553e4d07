"""The GPU path, measured in one run: K models at once, the main job, a DeepOBS-scale study's
projected time, and torch.optim + autograd on the same device.

    python benchmarks/bench_gpu.py [--device cuda] [--rounds 3] [--out benchmarks/results]

(1) seconds per epoch at batch 64 of K = 1, 15, 64 and 1,024 momentum runs trained as one
    batch (a steady epoch: the second of a two-epoch run), and per model-epoch;
(2) the same models as torch.optim.SGD(momentum) + autograd loops on the same device, one
    after another (what a user without stochopt writes), per model-epoch; the ratio;
(3) the main job, ``stochopt compare`` at its defaults on the device, as a fresh process:
    wall seconds, and its training seconds from tasks.csv;
(4) a 36,000-run study (20 optimisers x 36 learning rates x 10 seeds x 5 batch sizes, 10
    epochs each): one epoch of each (optimiser, batch size) group of 360 models is timed,
    and the study's time is projected as 10 x their sum (every group trains as one batch).
    The goal on one H100 is under 10 minutes.

``--device cpu --tiny`` runs every part at toy sizes (the test suite does, so the script is
ready when a GPU is lent); the numbers mean something only on the GPU. The step issues no
host synchronisation inside an epoch (the loop reads nothing back until the epoch's end).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmark_args import steady_epoch_seconds, tiny_split, write_results  # beside this file

from stochopt.data import Split, load_split
from stochopt.optim import RULES
from stochopt.train import Config

STUDY_EPOCHS = 10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_optim_epoch(split: Split, batch_size: int, lr: float) -> float:
    """Seconds of an epoch of nn.Linear + F.cross_entropy + autograd + torch.optim.SGD
    (momentum 0.9) on the split's device, the batch's loss kept as a tensor each step."""
    X, y = split.X_train, split.y_train
    model = torch.nn.Linear(X.shape[1], split.n_classes, bias=False).to(X.device)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.randperm(len(X), device=X.device)
    sync(X.device)
    started = time.perf_counter()
    losses = []
    for idx in order.split(batch_size):
        loss = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.stack(losses).mean().item()
    sync(X.device)
    return time.perf_counter() - started


def main_job(device: str, data: str | None, tiny: bool) -> tuple[float, float]:
    """Wall seconds of ``stochopt compare`` in a fresh process, and the training seconds
    its tasks.csv records."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "stochopt", "compare", "--device", device, "--out", out,
               "--quiet"]
        if data:
            cmd += ["--data-dir", data]
        if tiny:  # scikit-learn's 1,797 digits: the test's seconds
            cmd += ["--epochs", "1", "--seeds", "0", "--dataset", "digits"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"stochopt compare failed: {proc.stderr.strip()[-500:]}")
        with open(Path(out) / "tasks.csv") as f:
            trained = sum(float(r["seconds"]) for r in csv.DictReader(f))
    return wall, trained


def study_rules(n: int) -> list[str]:
    """The registry's first n mini-batch rules (no extra passes, no loss evaluations)."""
    names = [name for name, rule in RULES.items()
             if rule.estimator == "minibatch" and not rule.needs_loss]
    return names[:n]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (1)-(2); medians of them")
    p.add_argument("--ks", default="1,15,64,1024", help="models trained at once in (1)")
    p.add_argument("--study", default="20,36,10",
                   help="the study's optimisers, learning rates and seeds")
    p.add_argument("--study-batch-sizes", default="32,64,128,256,512")
    p.add_argument("--tiny", action="store_true", help="toy sizes, for the test suite")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu (toy numbers) or on a GPU machine")
        return 2
    data = os.environ.get("STOCHOPT_DATA")
    split = load_split(data, device=device)
    if args.tiny:
        split = tiny_split(split, part=20, held=200)
        args.rounds, args.ks, args.study, args.study_batch_sizes = 1, "1,4", "2,2,2", "64,128"
    ks = [int(k) for k in args.ks.split(",")]
    n_rules, n_lrs, n_seeds = (int(v) for v in args.study.split(","))
    sizes = [int(b) for b in args.study_batch_sizes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}, {len(split.X_train)} training examples\n")
    rows: list[dict] = []

    def add(what: str, seconds: float, per_model: float | None = None, note: str = "") -> None:
        rows.append({"what": what, "seconds": seconds,
                     "per_model_epoch": math.nan if per_model is None else per_model,
                     "note": note})
        per = "" if per_model is None else f"{per_model * 1e3:10.3f} ms/model-epoch"
        print(f"{what:<50} {seconds:9.4f} s {per}  {note}", flush=True)

    # (1) and (2), interleaved round by round
    ours: dict[int, list[float]] = {K: [] for K in ks}
    theirs: list[float] = []
    for _ in range(args.rounds):
        for K in ks:
            configs = [Config(batch_size=64, lr=0.01 + 0.09 * i / K) for i in range(K)]
            ours[K].append(steady_epoch_seconds(split, configs))
        theirs.append(torch_optim_epoch(split, 64, 0.1))
    torch_epoch = statistics.median(theirs)
    ratios: dict[str, float] = {}
    for K in ks:
        epoch = statistics.median(ours[K])
        add(f"(1) stochopt K={K}, epoch @64", epoch, epoch / K)
        ratios[f"(2) torch.optim/stochopt per model-epoch, K={K}"] = torch_epoch / (epoch / K)
    add("(2) torch.optim + autograd, one model, epoch @64", torch_epoch, torch_epoch,
        "K models: K such loops")

    # (3) the main job
    wall, trained = main_job(args.device, data, args.tiny)
    # four significant digits: the tiny test run trains for a few milliseconds
    add("(3) main job: stochopt compare, wall", wall, note=f"training {trained:.4g} s")
    ratios["(3) main job wall/training"] = wall / trained if trained else math.nan

    # (4) the DeepOBS-scale study, projected from one epoch of each group
    rules = study_rules(n_rules)
    groups = 0.0
    for rule in rules:
        default_lr = Config(optimizer=rule).base_lr
        lrs = [default_lr * 10 ** (-2 + 3 * i / max(n_lrs - 1, 1)) for i in range(n_lrs)]
        for bs in sizes:
            configs = [Config(optimizer=rule, batch_size=bs, lr=lr, seed=seed)
                       for seed in range(n_seeds) for lr in lrs]
            groups += steady_epoch_seconds(split, configs)
    runs = len(rules) * n_lrs * n_seeds * len(sizes)
    projected = STUDY_EPOCHS * groups
    add(f"(4) study of {runs:,} runs x {STUDY_EPOCHS} epochs, projected", projected,
        note=f"{len(rules) * len(sizes)} groups of {n_lrs * n_seeds} models, "
             f"one epoch each timed: {groups:.2f} s")
    print()
    for what, r in ratios.items():
        print(f"{what:<50} {r:9.2f}x")
    print(f"(4) projected study: {projected / 60:.1f} min (goal on one H100: under 10 min)")
    write_results(args.out, "bench_gpu", rows, device=name,
                  ratios=ratios, study_runs=runs, study_rules=rules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
