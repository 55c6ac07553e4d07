"""What every command does with its parsed flags: configurations, the device, the data,
the progress bar."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data import VAL_FRACTION, Split, load_split
from ..errors import StochoptError
from ..optim.plugin import OWN_DECAY, is_plugin, parse_value
from ..study.plan import grid, tune_grid
from .parser import LISTED, PRESETS, SEEDS, hyperparameter_flags


def preset_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {"bias": False, "val_fraction": VAL_FRACTION, **PRESETS[args.preset]}
    if args.bias is not None:
        values["bias"] = args.bias
    return values


def configs_from_args(args: argparse.Namespace) -> list[Config]:
    """Every combination of the listed values, validated before any data is read."""
    preset = preset_values(args)
    values = {n: getattr(args, n) for n in LISTED if getattr(args, n, None) is not None}
    for name in ("batch_size", "epochs"):
        if name not in values and name in preset:
            values[name] = preset[name]
    values.update({n: [v] if isinstance(v, bool) else v for n in hyperparameter_flags()
                   if (v := getattr(args, n, None)) is not None})
    values.update(hp_values(getattr(args, "hp", None) or [], args.optimizer))
    if args.command == "train" and any(len(v) > 1 for v in [*values.values(), args.optimizer]):
        raise StochoptError("train takes one value per flag; use stochopt sweep or compare "
                            "for several")
    if args.command != "train":
        values.setdefault("seed", SEEDS)
    scale = getattr(args, "scale_lr", False)
    if args.command == "tune":
        if args.lr_points < 1 or not (math.isfinite(args.lr_decades) and args.lr_decades >= 0):
            raise StochoptError(f"--lr-points must be at least 1 and --lr-decades finite and "
                                f">= 0, got {args.lr_points} and {args.lr_decades}")
        configs, notes = tune_grid(args.optimizer, values, values.get("lr"), scale,
                                   args.lr_points, args.lr_decades)
    else:
        configs, notes = grid(args.optimizer, values, scale_lr=scale)
    for note in notes:
        print(f"stochopt: note: {note.flags()}", file=sys.stderr)
    return configs


def hp_values(items: list[str], optimizers: list[str]) -> dict[str, list[Any]]:
    """``--hp NAME=VALUE`` flags as lists of values: a comma list (outside parentheses) is
    several values; ``weight_decay`` is a plug-in's own when plug-ins are listed."""
    values: dict[str, list[Any]] = {}
    plugins = any(is_plugin(o) for o in optimizers)
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not text.strip():
            raise StochoptError(f"--hp {item!r}: give NAME=VALUE, e.g. --hp eps=1e-8")
        if plugins and name == "weight_decay":
            name = OWN_DECAY
        values[name] = [parse_value(part) for part in _split_outside_parentheses(text)]
    return values


def _split_outside_parentheses(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def check_device(name: str, here: bool = True) -> torch.device:
    """The device --device names; ``here``: it must exist on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StochoptError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if here and device.type == "cuda" and not torch.cuda.is_available():
        raise StochoptError("--device cuda was asked for but CUDA is not available here; "
                            "use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise StochoptError(f"--device {name!r} is not supported; use cpu or cuda")
    return device


def load_data(args: argparse.Namespace, configs: Sequence[Config] = (),
              device: str | None = None) -> Split:
    """The split the flags name (on ``device`` if given, else --device's), with every
    configuration checked against its size."""
    preset = preset_values(args)
    split = load_split(args.data_dir, args.dataset, device or check_device(args.device),
                       getattr(torch, args.dtype), preset["bias"], preset["val_fraction"],
                       args.standardize)
    for c in configs:
        c.validate(len(split.X_train))
    return split


# the progress bars this process's commands opened, for close_progress_bars
_bars: list[Any] = []


def progress(args: argparse.Namespace, total: int, desc: str, lines: bool):
    from tqdm import tqdm  # here: --help need not import it

    bar = tqdm(total=total, desc=desc, unit="epoch", disable=args.quiet, file=sys.stderr)
    _bars.append(bar)

    def on_epoch(epoch: int, records) -> None:
        bar.update(len(records))
        if lines and not args.quiet:
            r = records[0].rows[-1]
            sub = "" if math.isnan(r["suboptimality"]) else f"  f-f* {r['suboptimality']:.2e}"
            bar.write(f"epoch {epoch:3d}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
                      f"acc {r['train_acc']:.2f}%  val loss {r['val_loss']:.4f} "
                      f"acc {r['val_acc']:.2f}%{sub}  {r['seconds']:.2f}s")

    return bar, on_epoch


def close_progress_bars() -> None:
    """Close the bars a command left open (an interrupted one's): its last line ends, so
    what is printed next stands on a line of its own. Closing a closed bar does nothing."""
    while _bars:
        _bars.pop().close()


def load_weights(path: str, shape: tuple[int, int]):
    """A weights file of the given shape, or one line saying what is wrong with it."""
    try:
        W = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StochoptError(f"--weights {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise StochoptError(f"--weights {path} is not a readable .npy file ({e})") from None
    if W.shape != shape or not np.issubdtype(W.dtype, np.floating):
        raise StochoptError(f"--weights {path} holds a {W.dtype} array of shape {W.shape}; "
                            f"expected floats of shape {shape} (features x classes; add --bias "
                            "for weights trained with a bias row)")
    if not np.isfinite(W).all():
        raise StochoptError(f"--weights {path} holds NaN or infinite values")
    return W
