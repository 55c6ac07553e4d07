"""The ``stochopt`` command: argument parsing, validation at the boundary, friendly errors.

Every user-facing problem is a :class:`StochoptError`, printed as one line on stderr with
exit code 2; a diverged ``train`` run writes its (complete) files and exits with code 1.
"""

from __future__ import annotations

import argparse
import itertools
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
from .train import OPTIMIZER_NAMES, Config, History, update_rule

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


def _add_train_args(p: argparse.ArgumentParser, many: bool) -> None:
    """Training flags; with ``many`` (compare, sweep) numbers take comma-separated lists."""
    g = p.add_argument_group("training (lists are comma-separated; every combination is "
                             "trained)" if many else "training")
    g.add_argument("--optimizer", "--optimizers", dest="optimizer", type=_names,
                   default=["momentum"], metavar="NAME",
                   help=f"one of {', '.join(OPTIMIZER_NAMES)} (default: momentum)")
    g.add_argument("--lr", type=_numbers(float, "--lr"), default=[None],
                   help="base learning rate (default: 0.1 for sgd/momentum/nesterov/svrg/saga, "
                   "torch.optim's default for the others: adam 1e-3, rmsprop 1e-2, ...)")
    g.add_argument("--batch-size", "--batch-sizes", dest="batch_size",
                   type=_numbers(int, "--batch-size"), default=None,
                   help="mini-batch size, up to the training-set size (default: 64)")
    g.add_argument("--epochs", type=_number(int, "--epochs"), default=None,
                   help="default: 10")
    g.add_argument("--schedule", default="exponential", metavar="NAME",
                   help=f"one of {', '.join(SCHEDULES)} (default: exponential)")
    g.add_argument("--lr-decay", type=_numbers(float, "--lr-decay"), default=[None],
                   help="exponential/step: factor per epoch/step (0.9/0.1); inverse-time: "
                   "rate (1.0); cosine: final factor (0.0)")
    g.add_argument("--step-size", type=_number(int, "--step-size"), default=3,
                   help="epochs between decays of the step schedule (default: 3)")
    g.add_argument("--warmup-epochs", type=_number(float, "--warmup-epochs"), default=0.0,
                   help="linear warm-up over this many epochs (default: 0)")
    g.add_argument("--seed", "--seeds", dest="seed", type=_numbers(int, "--seed"), default=[0],
                   help="seed of the mini-batch order (default: 0)")
    g.add_argument("--train-metrics", choices=["after", "before"], default="after",
                   help="train loss/accuracy of each batch after the step, as the exercise "
                   "(default), or before it, reusing the step's logits")
    if many:
        g.add_argument("--scale-lr", action="store_true",
                       help="linear scaling rule: multiply each lr by batch size / 64")
    h = p.add_argument_group("optimiser hyperparameters (torch.optim's defaults when omitted)")
    for name, kind_ in HYPER_FLAGS.items():
        flag = f"--{name.replace('_', '-')}"
        if kind_ is bool:
            h.add_argument(flag, action="store_const", const=[True], default=[None])
        else:
            h.add_argument(flag, type=_numbers(float, flag), default=[None])
    g = p.add_argument_group("output")
    g.add_argument("--out", default=f"runs/{p.prog.split()[-1]}",
                   help=f"output folder (default: runs/{p.prog.split()[-1]})")
    g.add_argument("--optimum", choices=["cached", "solve", "skip"], default="cached",
                   help="f* for the suboptimality column: use it if cached (default), solve "
                   "it if not (float64 L-BFGS, 1-3 min once per weight decay), or skip it")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def _numbers(kind: type, name: str):
    one = _number(kind, name)

    def parse(text: str) -> list:
        return [one(part.strip()) for part in text.split(",") if part.strip()] or [one(text)]

    return parse


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stochopt", description="Softmax regression on MNIST with stochastic "
                     "optimisers written from scratch, each checked against a reference.")
    parser.add_argument("--version", action="version", version=f"stochopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one configuration (the exercise's by default)",
                           description="Train one configuration and write history.csv, "
                           "summary.json, weights.npy, curves.png, weights.png and samples.png.")
    _add_train_args(train, many=False)
    _add_data_args(train)

    many = {
        "compare": ("the exercise's experiments: optimisers x batch sizes, with a report",
                    "Train every combination of --optimizers, --batch-sizes, --seeds (and any "
                    "listed hyperparameters) and write results.csv, summary.csv, figures and "
                    "report.html/report.md. Re-running the same command resumes: finished runs "
                    "are kept.", {"optimizer": ["momentum", "nesterov", "adam"]}),
        "sweep": ("K configurations of one optimiser trained at once",
                  "Like compare, for one optimiser and lists of hyperparameters: the "
                  "configurations sharing a batch size and seed train as one batch of K models. "
                  "Adds lr_sensitivity.png and reports the best configuration by validation "
                  "loss.", {"lr": [0.01, 0.03, 0.1, 0.3]}),
    }
    for name, (help_, description, defaults) in many.items():
        p = sub.add_parser(name, help=help_, description=description)
        _add_train_args(p, many=True)
        _add_data_args(p)
        p.set_defaults(**defaults)

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
    values = {"bias": False, "batch_size": [64], "epochs": 10, "val_fraction": VAL_FRACTION}
    preset = dict(PRESETS[args.preset])
    if "batch_size" in preset:
        preset["batch_size"] = [preset["batch_size"]]
    values.update(preset)
    for key in ("bias", "batch_size", "epochs"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return values


def configs_from_args(args: argparse.Namespace) -> list[Config]:
    """Every combination of the listed values, validated before any data is read."""
    preset = _preset(args)
    hyper_lists = {n: getattr(args, n) for n in HYPER_FLAGS if getattr(args, n) != [None]}
    configs = []
    for optimizer in args.optimizer:
        if optimizer not in OPTIMIZER_NAMES:
            raise StochoptError(f"unknown optimizer {optimizer!r}; "
                                f"choose one of {', '.join(OPTIMIZER_NAMES)}")
        rule = OPTIMIZERS[update_rule(optimizer)]
        applicable = {n: v for n, v in hyper_lists.items() if n in rule.hyperparameters()}
        if len(args.optimizer) == 1 and len(applicable) < len(hyper_lists):
            name = next(n for n in hyper_lists if n not in applicable)
            raise StochoptError(f"--{name.replace('_', '-')} does not apply to --optimizer "
                                f"{optimizer}; it takes "
                                f"{', '.join(rule.hyperparameters()) or 'no hyperparameters'}")
        names = list(applicable)
        for values in itertools.product(preset["batch_size"], args.seed, args.lr,
                                        args.lr_decay, *applicable.values()):
            batch_size, seed, lr, lr_decay, *hyper = values
            config = Config(optimizer=optimizer, lr=lr, batch_size=batch_size,
                            epochs=preset["epochs"], schedule=args.schedule, lr_decay=lr_decay,
                            step_size=args.step_size, warmup_epochs=args.warmup_epochs,
                            seed=seed, train_metrics=args.train_metrics,
                            hyper=dict(zip(names, hyper, strict=True)))
            if getattr(args, "scale_lr", False):
                config.lr = config.base_lr * batch_size / 64
            config.validate()
            configs.append(config)
    if args.command == "train" and len(configs) > 1:
        raise StochoptError("train takes one value per flag; use stochopt sweep or compare "
                            "for several")
    return configs


def load_data(args: argparse.Namespace) -> Split:
    preset = _preset(args)
    dtype = getattr(torch, args.dtype)
    return load_split(args.data_dir, args.dataset, check_device(args.device), dtype,
                      preset["bias"], preset["val_fraction"])


def versions() -> dict[str, str]:
    return {"stochopt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _start(args: argparse.Namespace):
    """Validate everything, lock and prepare --out, load the data: (configs, split, out, f*)."""
    from .files import lock_out, prepare_out
    from .optimum import cached_optimum

    configs = configs_from_args(args)
    check_device(args.device)
    split = load_data(args)
    for c in configs:
        c.validate(len(split.X_train))
    out = prepare_out(args.out)  # only once all input is known good: a refusal writes nothing
    lock_out(out)
    stars: dict[float, float | None] = {}

    def f_star(config: Config) -> float | None:
        wd = config.weight_decay
        if wd not in stars:
            opt = None if args.optimum == "skip" else cached_optimum(
                split, wd, compute=args.optimum == "solve", progress=not args.quiet)
            stars[wd] = None if opt is None else opt.objective
        return stars[wd]

    return configs, split, out, f_star


def _progress(args: argparse.Namespace, total: int, desc: str, lines: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch", disable=args.quiet, file=sys.stderr)

    def on_epoch(epoch: int, histories: list[History]) -> None:
        bar.update(len(histories))
        if lines and not args.quiet:
            r = histories[0].rows[-1]
            sub = "" if math.isnan(r["suboptimality"]) else f"  f-f* {r['suboptimality']:.2e}"
            bar.write(f"epoch {epoch:3d}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
                      f"acc {r['train_acc']:.2f}%  val loss {r['val_loss']:.4f} "
                      f"acc {r['val_acc']:.2f}%{sub}  {r['seconds']:.2f}s")

    return bar, on_epoch


def cmd_train(args: argparse.Namespace) -> int:
    from . import plots
    from .files import save_figure, write_csv, write_json, write_npy
    from .train import fit

    (config,), split, out, f_star = _start(args)
    star = f_star(config)
    bar, on_epoch = _progress(args, config.epochs, f"{config.optimizer} bs={config.batch_size}",
                              lines=True)
    (history,) = fit(config, split, f_star=None if star is None else [star], on_epoch=on_epoch)
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
    summary = {**record, "final": history.rows[-1] if history.rows else {}, "f_star": star,
               "data": _data_info(args, split), "versions": versions()}
    write_json(out / "summary.json", summary)
    if history.status == "diverged":
        print(f"stochopt: the run diverged (non-finite or exploding loss) at epoch "
              f"{history.diverged_epoch}; try a smaller --lr. Results so far are in {out}",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"test loss {history.test_loss:.4f}  test accuracy {history.test_acc:.2f}%  "
              f"-> {out}")
    return 0


def _data_info(args: argparse.Namespace, split: Split) -> dict[str, Any]:
    return {"dataset": args.dataset, "n_train": len(split.X_train), "n_val": len(split.X_val),
            "n_test": len(split.X_test), "bias": _preset(args)["bias"], "device": args.device,
            "dtype": args.dtype}


def cmd_many(args: argparse.Namespace) -> int:
    """compare and sweep: train (or resume) every configuration, then tables, figures, report."""
    from . import plots
    from .files import save_figure, write_json
    from .report import write_report
    from .sweep import run_all, write_results, write_summary
    from .train import History

    configs, split, out, f_star = _start(args)
    bar, on_epoch = _progress(args, sum(c.epochs for c in configs), args.command, lines=False)

    def on_group(group: list[Config], skipped: bool) -> None:
        if skipped:
            bar.update(sum(c.epochs for c in group))
            bar.write(f"{len(group)} finished run(s) of {group[0].optimizer} kept from {out}")

    records = run_all(configs, split, out, f_star, on_epoch, on_group)
    bar.close()
    write_results(out, records)
    table = write_summary(out, records)
    histories = [History(Config(**r["config"]), r["history"], status=r["status"])
                 for r in records]
    labels = [f"{h.config.optimizer} lr={h.config.base_lr:g} bs={h.config.batch_size}"
              + (f" s={h.config.seed}" if len(args.seed) > 1 else "") for h in histories]
    save_figure(out / "curves.png", plots.curves(histories, labels))
    figures = ["curves.png"]
    for optimizer in dict.fromkeys(c.optimizer for c in configs):
        first = next(r for r in records if r["config"]["optimizer"] == optimizer)
        W = np.load(out / "runs" / f"{first['run']}.npy")
        save_figure(out / f"weights_{optimizer}.png",
                    plots.weights(W, f"{optimizer}: columns of W ({first['run']})"))
        figures.append(f"weights_{optimizer}.png")
    if len({c.batch_size for c in configs}) > 1:
        save_figure(out / "batch_sizes.png", plots.batch_sizes(table))
        figures.append("batch_sizes.png")
    lrs_per_optimizer = {c.optimizer: set() for c in configs}
    for c in configs:
        lrs_per_optimizer[c.optimizer].add(c.base_lr)
    if any(len(lrs) > 1 for lrs in lrs_per_optimizer.values()):
        save_figure(out / "lr_sensitivity.png", plots.lr_sensitivity(table))
        figures.append("lr_sensitivity.png")
    write_report(out, table, figures, f"stochopt {args.command}")
    write_json(out / "meta.json", {"command": args.command, "data": _data_info(args, split),
                                   "versions": versions()})
    ok = [r for r in table if r["status"] == "ok"]
    if not args.quiet:
        for r in table:
            print(f"{r['run']:<44} {r['status']:<8} val acc {r['final_val_acc']:6.2f}%  "
                  f"test acc {r['test_acc']:6.2f}%  {r['seconds_per_epoch']:.3f} s/epoch")
        if ok:
            best = min(ok, key=lambda r: r["final_val_loss"])
            print(f"best by validation loss: {best['run']} ({best['final_val_loss']:.4f})")
        print(f"-> {out / 'report.html'}")
    return 0 if ok else 1


def cmd_optimum(args: argparse.Namespace) -> int:
    from .files import prepare_out, write_json, write_npy
    from .optimum import cached_optimum
    from .train import evaluate

    wd = args.weight_decay
    if not (math.isfinite(wd) and wd >= 0):
        raise StochoptError(f"--weight-decay must be finite and >= 0, got {wd}")
    split = load_data(args)
    out = prepare_out(args.out) if args.out else None
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


COMMANDS = {"train": cmd_train, "compare": cmd_many, "sweep": cmd_many, "optimum": cmd_optimum}


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
    finally:
        from .files import release_locks

        release_locks()


if __name__ == "__main__":
    sys.exit(main())
