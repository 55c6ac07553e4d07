"""The single-purpose commands: ``optimum``, ``noise-scale`` and ``landscape``."""

from __future__ import annotations

import argparse
import json
import math

import torch

from .. import landscape
from ..errors import StochoptError
from ..files import prepare_out, write_json
from ..noise import noise_scales
from ..optim import Rule
from ..study.artefacts import write_optimum
from .common import load_data, load_weights


def cmd_optimum(args: argparse.Namespace) -> int:
    if len(args.weight_decay) != 1:
        raise StochoptError(f"optimum solves one problem: give --weight-decay one value, not "
                            f"{len(args.weight_decay)} (run it once per weight decay)")
    (wd,) = args.weight_decay
    Rule.weight_decay.check(wd)  # before the data is read
    split = load_data(args)
    print(json.dumps(write_optimum(split, wd, args.out), indent=2))
    return 0


def cmd_noise_scale(args: argparse.Namespace) -> int:
    split = load_data(args)
    X = split.X_train
    if args.weights is None:
        W = torch.zeros(split.n_features, split.n_classes, dtype=X.dtype, device=X.device)
    else:
        W = torch.as_tensor(load_weights(args.weights, (split.n_features, split.n_classes)),
                            dtype=X.dtype, device=X.device)
    result = noise_scales(W, X, split.y_train)[0].to_json()
    if args.out:
        write_json(prepare_out(args.out) / "noise_scale.json",
                   {**result, "weights": args.weights or "zero"})
    print(json.dumps(result, indent=2))
    return 0


def cmd_landscape(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise StochoptError(f"--steps must be at least 1, got {args.steps}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise StochoptError(f"--lr must be a positive finite number, got {args.lr}")
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise StochoptError(f"--noise must be finite and >= 0, got {args.noise}")
    land = landscape.run(args.function, args.optimizer, args.steps, args.condition,
                         args.noise, args.seed, args.lr)
    files = landscape.write(land, args.out)
    for p in land.paths:
        reached = landscape.steps_to(p, 1e-6)
        print(f"{p.optimizer:<10} lr {p.lr:<8g} f - f* {p.values[-1]:.3e} after "
              f"{len(p.values) - 1} steps" + (" (diverged)" if p.diverged else "")
              + ("" if reached is None else f"; below 1e-6 at step {reached}"))
    print("-> " + ", ".join(str(f) for f in files))
    return 0
