"""The ``stochopt`` command: argument parsing, validation at the boundary, friendly errors.

Every user-facing problem is a :class:`StochoptError`, printed as one line on stderr with
exit code 2; a diverged ``train`` run writes its (complete) files and exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import __version__
from .data import DATASETS, VAL_FRACTION, Split, load_split
from .errors import StochoptError
from .optim import OPTIMIZERS
from .schedules import SCHEDULES
from .train import OPTIMIZER_NAMES, Config, History

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "suboptimality", "seconds"]
# flag -> optimiser hyperparameter; each is passed only to optimisers that have it
HYPER_FLAGS = {"momentum": float, "dampening": float, "beta1": float, "beta2": float,
               "eps": float, "alpha": float, "rho": float, "momentum_decay": float,
               "weight_decay": float, "centered": bool, "amsgrad": bool}
PRESETS = {  # values a preset sets unless the flag is given
    "exercise": {},
    "deepobs": {"bias": True, "batch_size": 128, "epochs": 50, "val_fraction": 1 / 6},
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise StochoptError(f"{self.prog}: {message} (see --help)")


def _number(kind: type, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if kind is float and math.isnan(value):
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}")
        return value

    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and device")
    g.add_argument("--data-dir", help="folder with the four IDX files (default: $STOCHOPT_DATA, "
                   "else a user cache that is filled by downloading MNIST)")
    g.add_argument("--dataset", choices=DATASETS, default="mnist",
                   help="'mnist' checks MNIST's checksums; 'idx' accepts any data set in the "
                   "same four-file layout, e.g. Fashion-MNIST (default: mnist)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g.add_argument("--bias", action="store_true", default=None,
                   help="add a bias (a constant-1 feature; its weight row is the bias)")
    g.add_argument("--preset", choices=list(PRESETS), default="exercise",
                   help="exercise: the exercise's split 48k/12k, no bias; deepobs: bias, "
                   "batch 128, 50 epochs, split 50k/10k (default: exercise)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--optimizer", default="momentum", metavar="NAME",
                   help=f"one of {', '.join(OPTIMIZER_NAMES)} (default: momentum)")
    g.add_argument("--lr", type=_number(float, "--lr"),
                   help="base learning rate (default: 0.1 for sgd/momentum/nesterov/svrg/saga, "
                   "torch.optim's default for the others: adam 1e-3, rmsprop 1e-2, ...)")
    g.add_argument("--batch-size", type=_number(int, "--batch-size"), default=None,
                   help="mini-batch size, up to the training-set size (default: 64)")
    g.add_argument("--epochs", type=_number(int, "--epochs"), default=None,
                   help="default: 10")
    g.add_argument("--schedule", default="exponential", metavar="NAME",
                   help=f"one of {', '.join(SCHEDULES)} (default: exponential)")
    g.add_argument("--lr-decay", type=_number(float, "--lr-decay"),
                   help="exponential/step: factor per epoch/step (0.9/0.1); inverse-time: "
                   "rate (1.0); cosine: final factor (0.0)")
    g.add_argument("--step-size", type=_number(int, "--step-size"), default=3,
                   help="epochs between decays of the step schedule (default: 3)")
    g.add_argument("--warmup-epochs", type=_number(float, "--warmup-epochs"), default=0.0,
                   help="linear warm-up over this many epochs (default: 0)")
    g.add_argument("--seed", type=_number(int, "--seed"), default=0,
                   help="seed of the mini-batch order (default: 0)")
    g.add_argument("--train-metrics", choices=["after", "before"], default="after",
                   help="train loss/accuracy of each batch after the step, as the exercise "
                   "(default), or before it, reusing the step's logits")
    h = p.add_argument_group("optimiser hyperparameters (torch.optim's defaults when omitted)")
    for name, kind in HYPER_FLAGS.items():
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            h.add_argument(flag, action="store_true", default=None)
        else:
            h.add_argument(flag, type=_number(float, flag), default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stochopt", description="Softmax regression on MNIST with stochastic "
                     "optimisers written from scratch, each checked against a reference.")
    parser.add_argument("--version", action="version", version=f"stochopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one configuration (the exercise's by default)",
                           description="Train one configuration and write history.csv, "
                           "summary.json, weights.npy, curves.png, weights.png and samples.png.")
    _add_train_args(train)
    _add_data_args(train)
    train.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    train.add_argument("--no-optimum", action="store_true",
                       help="skip f* (solved once per data set and weight decay, then cached) "
                       "and the suboptimality column")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")

    optimum = sub.add_parser("optimum", help="solve the full-batch problem: f*, W*",
                             description="Solve min_W mean cross-entropy + wd/2 ||W||^2 on the "
                             "training split in float64 (whitened L-BFGS), cache it, report it.")
    optimum.add_argument("--weight-decay", type=_number(float, "--weight-decay"), default=0.0)
    _add_data_args(optimum)
    optimum.add_argument("--out", help="write optimum.json and weights.npy here")
    return parser


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StochoptError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StochoptError("--device cuda was asked for but CUDA is not available here; "
                            "use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise StochoptError(f"--device {name!r} is not supported; use cpu or cuda")
    return device


def _preset(args: argparse.Namespace) -> dict[str, Any]:
    values = {"bias": False, "batch_size": 64, "epochs": 10, "val_fraction": VAL_FRACTION}
    values.update(PRESETS[args.preset])
    for key in ("bias", "batch_size", "epochs"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return values


def config_from_args(args: argparse.Namespace) -> Config:
    preset = _preset(args)
    rule = OPTIMIZERS.get(args.optimizer, OPTIMIZERS["sgd"])
    hyper = {}
    for name in HYPER_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in rule.hyperparameters():
            raise StochoptError(f"--{name.replace('_', '-')} does not apply to --optimizer "
                                f"{args.optimizer}; it takes "
                                f"{', '.join(rule.hyperparameters()) or 'no hyperparameters'}")
        hyper[name] = value
    config = Config(optimizer=args.optimizer, lr=args.lr, batch_size=preset["batch_size"],
                    epochs=preset["epochs"], schedule=args.schedule, lr_decay=args.lr_decay,
                    step_size=args.step_size, warmup_epochs=args.warmup_epochs, seed=args.seed,
                    train_metrics=args.train_metrics, hyper=hyper)
    config.validate()
    return config


def load_data(args: argparse.Namespace) -> Split:
    preset = _preset(args)
    dtype = getattr(torch, args.dtype)
    return load_split(args.data_dir, args.dataset, check_device(args.device), dtype,
                      preset["bias"], preset["val_fraction"])


def versions() -> dict[str, str]:
    return {"stochopt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def cmd_train(args: argparse.Namespace) -> int:
    from . import plots
    from .files import prepare_out, save_figure, write_csv, write_json, write_npy
    from .optimum import cached_optimum
    from .train import fit

    config = config_from_args(args)
    check_device(args.device)
    out = prepare_out(args.out)
    split = load_data(args)
    config.validate(len(split.X_train))
    f_star = None
    if not args.no_optimum:
        f_star = [cached_optimum(split, config.weight_decay, progress=not args.quiet).objective]

    from tqdm import tqdm

    bar = tqdm(total=config.epochs, desc=f"{config.optimizer} bs={config.batch_size}",
               unit="epoch", disable=args.quiet, file=sys.stderr)

    def on_epoch(epoch: int, histories: list[History]) -> None:
        r = histories[0].rows[-1]
        bar.update(1)
        if not args.quiet:
            sub = "" if math.isnan(r["suboptimality"]) else f"  f-f* {r['suboptimality']:.2e}"
            bar.write(f"epoch {epoch:3d}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
                      f"acc {r['train_acc']:.2f}%  val loss {r['val_loss']:.4f} "
                      f"acc {r['val_acc']:.2f}%{sub}  {r['seconds']:.2f}s")

    (history,) = fit(config, split, f_star=f_star, on_epoch=on_epoch)
    bar.close()

    write_csv(out / "history.csv", history.rows, HISTORY_COLUMNS)
    write_npy(out / "weights.npy", history.weights.astype(np.float32))
    save_figure(out / "curves.png", plots.curves([history], [config.optimizer]))
    save_figure(out / "weights.png", plots.weights(history.weights,
                                                   f"{config.optimizer}: columns of W"))
    save_figure(out / "samples.png", plots.samples(split.X_train[:32].cpu().numpy(),
                                                   split.y_train[:32].cpu().numpy()))
    record = history.to_dict()
    del record["history"]  # it is history.csv
    summary = {**record, "final": history.rows[-1] if history.rows else {},
               "f_star": f_star[0] if f_star else None,
               "data": {"dataset": args.dataset, "n_train": len(split.X_train),
                        "n_val": len(split.X_val), "n_test": len(split.X_test),
                        "bias": _preset(args)["bias"], "device": args.device,
                        "dtype": args.dtype},
               "versions": versions()}
    write_json(out / "summary.json", summary)
    if history.status == "diverged":
        print(f"stochopt: the run diverged (non-finite loss) at epoch {history.diverged_epoch}; "
              f"try a smaller --lr. Results so far are in {out}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"test loss {history.test_loss:.4f}  test accuracy {history.test_acc:.2f}%  "
              f"-> {out}")
    return 0


def cmd_optimum(args: argparse.Namespace) -> int:
    from .files import prepare_out, write_json, write_npy
    from .optimum import cached_optimum
    from .train import evaluate

    wd = args.weight_decay
    if not (math.isfinite(wd) and wd >= 0):
        raise StochoptError(f"--weight-decay must be finite and >= 0, got {wd}")
    out = prepare_out(args.out) if args.out else None
    split = load_data(args)
    opt = cached_optimum(split, wd, progress=True)
    W = opt.W.to(split.X_train.device, split.X_train.dtype).unsqueeze(0)
    result: dict[str, Any] = {"objective": opt.objective, "weight_decay": wd,
                              "bias": _preset(args)["bias"], "grad_max_abs": opt.grad_norm,
                              "iterations": opt.iterations, "solve_seconds": opt.seconds}
    for part in ("train", "val", "test"):
        (loss,), (acc,) = evaluate(W, *split.part(part))
        result[f"{part}_loss"], result[f"{part}_acc"] = loss, acc
    print(json.dumps(result, indent=2))
    if out is not None:
        write_npy(out / "weights.npy", opt.W.numpy())
        write_json(out / "optimum.json", {**result, "versions": versions()})
    return 0


COMMANDS = {"train": cmd_train, "optimum": cmd_optimum}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except StochoptError as e:
        print(f"stochopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stochopt: interrupted; finished files are complete, nothing half-written",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
