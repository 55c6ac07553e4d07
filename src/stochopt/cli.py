"""The ``stochopt`` command: it parses, calls the library, and prints.

Flags, their help and their checks come from the declarations (each optimiser's settings in
:mod:`stochopt.optim`, Config's in :mod:`stochopt.config`). Every user-facing problem is a
:class:`StochoptError`, printed as one line on stderr with exit code 2 (a bad setting named
as its flag); a diverged ``train`` run writes its complete files and exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from . import __version__
from .analysis import Targets
from .config import Config
from .data import DATASETS, VAL_FRACTION, Split, load_split
from .errors import SettingError, StochoptError
from .optim import RULES
from .schedules import DECAY, SCHEDULES
from .settings import Setting

PRESETS = {  # values a preset sets unless the flag is given
    "exercise": {},
    "deepobs": {"bias": True, "batch_size": [128], "epochs": [50], "val_fraction": 1 / 6},
}
SEEDS = [0, 1, 2, 3, 4]  # compare, sweep and tune: five data orders, one batch
LISTED = ("lr", "batch_size", "epochs", "schedule", "lr_decay", "step_size", "warmup_epochs",
          "seed", "train_metrics")  # Config settings given as flags (lists for compare/sweep)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise StochoptError(f"{self.prog}: {message} (see --help)")


def _dataset(text: str) -> str:
    from .datasets import is_array_dataset

    if text in DATASETS or is_array_dataset(text):
        return text
    raise argparse.ArgumentTypeError(f"--dataset {text!r} is not one of mnist, idx, digits, "
                                     "npz:PATH, svmlight:PATH")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(kind: type, flag: str):
    """A comma-separated list of ``kind`` values."""
    def one(text: str):
        if kind is str:
            return text
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if kind is float and math.isnan(value):
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}")
        return value

    def parse(text: str) -> list:
        return [one(part.strip()) for part in text.split(",") if part.strip()] or [one(text)]

    return parse


def hyperparameter_flags() -> dict[str, tuple[Setting, dict[str, Any]]]:
    """Every optimiser hyperparameter (besides lr), with each optimiser's default: one flag
    each, read off the registry."""
    flags: dict[str, tuple[Setting, dict[str, Any]]] = {}
    for name, rule in RULES.items():
        for hp, setting in rule.settings().items():
            if hp != "lr":
                flags.setdefault(hp, (setting, {}))[1][name] = setting.default
    return flags


def _defaults(per_optimizer: dict[str, Any]) -> str:
    """'adamw 0.01, else 0.0': the most common default once, the others by name."""
    values = list(per_optimizer.values())
    common = max(values, key=values.count)
    others = [f"{o} {v}" for o, v in per_optimizer.items() if v != common]
    if values.count(common) == 1:
        return ", ".join(others + [f"{o} {v}" for o, v in per_optimizer.items() if v == common])
    only = len(per_optimizer) < len(RULES)
    tail = f"{common} for {', '.join(o for o, v in per_optimizer.items() if v == common)}" \
        if only else (f"else {common}" if others else str(common))
    return ", ".join([*others, tail])


def _add_train_args(p: argparse.ArgumentParser, many: bool) -> None:
    """Training flags; with ``many`` (compare, sweep) each takes a comma-separated list."""
    g = p.add_argument_group("training (lists are comma-separated; every combination is "
                             "trained)" if many else "training")
    lrs = {name: rule.lr.default for name, rule in RULES.items()}
    schedules = {name: rule.default_schedule for name, rule in RULES.items()}
    g.add_argument("--optimizer", "--optimizers", dest="optimizer", type=_parse(str, ""),
                   default=["momentum"], metavar="NAME",
                   help=f"one of {', '.join(RULES)} (default: momentum)")
    g.add_argument("--lr", *(["--lrs"] if many else []), dest="lr", type=_parse(float, "--lr"),
                   default=None, help=f"base learning rate (default: the optimizer's: "
                   f"{_defaults(lrs)}; tune: 13 log-spaced over three decades around it)")
    settings = Config.settings()
    for name in ("batch_size", "epochs"):
        s = settings[name]
        g.add_argument(_flag(name), *([_flag(name) + "s"] if name == "batch_size" else []),
                       dest=name, type=_parse(int, _flag(name)), default=None,
                       help=f"{s.help} (default: {s.default})")
    g.add_argument("--schedule", type=_parse(str, "--schedule"), default=None, metavar="NAME",
                   help=f"one of {', '.join(SCHEDULES)} (default: the optimizer's: "
                   f"{_defaults(schedules)})")
    g.add_argument("--lr-decay", type=_parse(float, "--lr-decay"), default=None,
                   help="the schedule's parameter: " + "; ".join(
                       f"{n}: {d.help} ({d.default})" for n, d in DECAY.items() if d))
    for name in ("step_size", "warmup_epochs"):
        s = settings[name]
        g.add_argument(_flag(name), type=_parse(s.kind, _flag(name)), default=None,
                       help=f"{s.help} (default: {s.default})")
    g.add_argument("--seed", "--seeds", dest="seed", type=_parse(int, "--seed"), default=None,
                   help=f"{settings['seed'].help} (default: "
                   f"{','.join(map(str, SEEDS)) if many else 0})")
    g.add_argument("--train-metrics", type=_parse(str, "--train-metrics"), default=None,
                   metavar="{after,before}",
                   help="train loss/accuracy of each batch after the step, as the exercise "
                   "(default), or before it, reusing the step's logits")
    if many:
        g.add_argument("--scale-lr", action="store_true",
                       help="linear scaling rule: multiply each lr by batch size / 64")
    h = p.add_argument_group("optimiser hyperparameters (each optimiser's own default when "
                             "omitted; a flag applies to the listed optimisers that have it)")
    for name, (setting, per_optimizer) in hyperparameter_flags().items():
        helps: dict[str, list[str]] = {}  # one flag; where rules differ, each meaning
        for o in per_optimizer:
            helps.setdefault(RULES[o].settings()[name].help, []).append(o)
        meaning = setting.help if len(helps) == 1 else "; ".join(
            f"{h} ({', '.join(os)})" for h, os in helps.items())
        help_ = f"{meaning} (default: {_defaults(per_optimizer)})"
        if setting.kind is bool:
            # --nesterov / --no-nesterov: a default of True must be possible to turn off
            h.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_)
        else:
            h.add_argument(_flag(name), dest=name, type=_parse(setting.kind, _flag(name)),
                           default=None, help=help_)
    if many:
        g = p.add_argument_group("answers")
        g.add_argument("--target-acc", type=float, default=Targets.val_acc,
                       help="validation accuracy (%%) whose first epoch, step, gradient "
                       "evaluation and second each run records (default: %(default)s)")
        g.add_argument("--target-subopt", type=float, default=Targets.subopt,
                       help="likewise for f - f*, where f* is attained (default: %(default)s)")
        g.add_argument("--noise-scale", action=argparse.BooleanOptionalAction, default=None,
                       help="measure the gradient noise scale B_simple after every epoch (one "
                       "more pass over the training set per epoch; default: on when several "
                       "batch sizes are compared, --no-noise-scale turns it off)")
    if many:
        g = p.add_argument_group("engine (where the groups train)")
        g.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: one group after another in this process (default); ray: "
                       "each group one task on a Ray cluster (pip install -e \".[ray]\")")
        g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="the cluster to run on, e.g. auto or HEAD_IP:6379 (default: the "
                       "one `ray start` started on this machine or $RAY_ADDRESS names, else a "
                       "Ray started for this command)")
        g.add_argument("--ray-cpus-per-task", type=int, default=None, metavar="N",
                       help="CPUs each task asks Ray for, and torch's threads in it (default: 1)")
        g.add_argument("--group-size", type=int, default=None, metavar="K",
                       help="train at most K models as one batch (one task), so that a "
                       "cluster's nodes share a big grid; every seed of a configuration stays "
                       "in one group (default: no limit; results depend on the grouping by "
                       "float rounding, so resume with the same K)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=f"runs/{p.prog.split()[-1]}",
                   help=f"output folder (default: runs/{p.prog.split()[-1]})")
    g.add_argument("--optimum", choices=["cached", "solve", "skip"], default="cached",
                   help="f* for the suboptimality column: use it if cached (default), solve "
                   "it if not (once per weight decay, then cached: 10-20 s on MNIST for wd > 0, "
                   "1-3 min for the upper bound at wd 0), or skip it")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and device")
    g.add_argument("--data-dir", help="folder with the four IDX files (default: $STOCHOPT_DATA, "
                   "else a user cache that is filled by downloading MNIST)")
    g.add_argument("--dataset", type=_dataset, default="mnist", metavar="NAME",
                   help="'mnist' checks MNIST's checksums; 'idx' accepts any data set in the "
                   "same four-file layout, e.g. Fashion-MNIST; 'digits' is scikit-learn's 8x8 "
                   "digits; 'npz:PATH' (arrays X, y, optionally X_test, y_test) and "
                   "'svmlight:PATH' (LIBSVM format) any other (default: mnist)")
    g.add_argument("--standardize", action="store_true",
                   help="centre and scale each feature by the training part's mean and sd "
                   "(npz and svmlight data; images keep pixels in [0, 1])")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g.add_argument("--bias", action="store_true", default=None,
                   help="add a bias (a constant-1 feature; its weight row is the bias)")
    g.add_argument("--preset", choices=list(PRESETS), default="exercise",
                   help="exercise: the exercise's split 48k/12k, no bias; deepobs: bias, "
                   "batch 128, 50 epochs, split 50k/10k (default: exercise)")


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
                  "Like compare, for one optimiser and lists of hyperparameters: all the "
                  "configurations of a batch size (every seed too) train as one batch of K "
                  "models. Adds lr_sensitivity.png and reports the best configuration by "
                  "validation loss.", {"lr": [0.01, 0.03, 0.1, 0.3]}),
    }
    many["tune"] = (
        "each optimizer's lr tuned on the same grid, then compared",
        "Train each optimizer over its own log-spaced lr grid (13 values over three decades "
        "around its default, or --lrs), every seed, all at once; choose each one's lr on "
        "mean final validation loss (a diverged run loses), then report the chosen ones' "
        "test metrics with intervals: tuning.csv, lr_sensitivity.png and the report's "
        "'After tuning'. With --batch-sizes, the lr is tuned per batch size.",
        {"optimizer": ["momentum", "nesterov", "adam"]})
    for name, (help_, description, defaults) in many.items():
        p = sub.add_parser(name, help=help_, description=description)
        _add_train_args(p, many=True)
        _add_data_args(p)
        p.set_defaults(**defaults)
        if name == "tune":
            g = p.add_argument_group("the lr grid (each optimizer's, unless --lrs)")
            g.add_argument("--lr-points", type=int, default=13,
                           help="learning rates per optimizer (default: %(default)s)")
            g.add_argument("--lr-decades", type=float, default=3.0,
                           help="decades they span, log-spaced and centred on the optimizer's "
                           "default lr (default: %(default)s)")

    optimum = sub.add_parser("optimum", help="solve the full-batch problem: f*, W*",
                             description="Solve min_W mean cross-entropy + wd/2 ||W||^2 on the "
                             "training split in float64 (certified Newton-CG for wd > 0; at wd 0, "
                             "where no minimiser exists, L-BFGS's best value, an upper bound), "
                             "with the Hessian's curvature at W*; cache it, report it.")
    optimum.add_argument("--weight-decay", type=_parse(float, "--weight-decay"), default=[0.0])
    _add_data_args(optimum)
    optimum.add_argument("--out", help="write optimum.json and weights.npy here")

    from .landscape import FUNCTIONS

    land = sub.add_parser("landscape", help="the optimisers' paths on a 2-D test function",
                          description="Run the same update rules on a 2-D function (the "
                          "exercise's 'optimisers from ex1') from its start point, at a "
                          "constant lr per step, and write paths.png (trajectories over "
                          "log-scaled contours), loss.png (f - f* per step; on the quadratic "
                          "with the rates theory predicts) and an animated paths.gif.")
    land.add_argument("--function", choices=FUNCTIONS, default="rosenbrock")
    land.add_argument("--optimizers", "--optimizer", dest="optimizer", type=_parse(str, ""),
                      default=["sgd", "momentum", "adam"], metavar="NAME",
                      help=f"any of {', '.join(RULES)} (default: sgd,momentum,adam)")
    land.add_argument("--lr", type=float, default=None,
                      help="one lr for all (default: per function and optimiser, chosen so "
                      "the picture teaches something; see the README)")
    land.add_argument("--steps", type=int, default=None,
                      help="steps (default: the function's, 500-1000)")
    land.add_argument("--condition", type=float, default=10.0,
                      help="the quadratic's condition number L/mu (default: 10)")
    land.add_argument("--noise", type=float, default=0.0,
                      help="add Gaussian noise of this scale to every gradient, as mini-batches "
                      "do (default: 0)")
    land.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    land.add_argument("--out", default="runs/landscape",
                      help="output folder (default: runs/landscape)")

    noise = sub.add_parser("noise-scale", help="the gradient noise scale B_simple of a model",
                           description="B_simple = tr(Sigma) / |G|^2 over the training split "
                           "(McCandlish et al. 2018), with G the full gradient of the mean "
                           "cross-entropy and Sigma the per-example gradients' covariance, "
                           "computed exactly; at the zero model unless --weights is given.")
    noise.add_argument("--weights", help="a (d, 10) .npy file, e.g. a run's weights.npy")
    _add_data_args(noise)
    noise.add_argument("--out", help="write noise_scale.json here")
    return parser


# --------------------------------------------------------------------------- from flags


def _preset(args: argparse.Namespace) -> dict[str, Any]:
    values = {"bias": False, "val_fraction": VAL_FRACTION, **PRESETS[args.preset]}
    if args.bias is not None:
        values["bias"] = args.bias
    return values


def configs_from_args(args: argparse.Namespace) -> list[Config]:
    """Every combination of the listed values, validated before any data is read."""
    from .experiment import grid, tune_grid

    preset = _preset(args)
    values = {n: getattr(args, n) for n in LISTED if getattr(args, n, None) is not None}
    for name in ("batch_size", "epochs"):
        if name not in values and name in preset:
            values[name] = preset[name]
    values.update({n: [v] if isinstance(v, bool) else v for n in hyperparameter_flags()
                   if (v := getattr(args, n, None)) is not None})
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
    preset = _preset(args)
    split = load_split(args.data_dir, args.dataset, device or check_device(args.device),
                       getattr(torch, args.dtype), preset["bias"], preset["val_fraction"],
                       args.standardize)
    for c in configs:
        c.validate(len(split.X_train))
    return split


# --------------------------------------------------------------------------- commands


def _progress(args: argparse.Namespace, total: int, desc: str, lines: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch", disable=args.quiet, file=sys.stderr)

    def on_epoch(epoch: int, records) -> None:
        bar.update(len(records))
        if lines and not args.quiet:
            r = records[0].rows[-1]
            sub = "" if math.isnan(r["suboptimality"]) else f"  f-f* {r['suboptimality']:.2e}"
            bar.write(f"epoch {epoch:3d}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
                      f"acc {r['train_acc']:.2f}%  val loss {r['val_loss']:.4f} "
                      f"acc {r['val_acc']:.2f}%{sub}  {r['seconds']:.2f}s")

    return bar, on_epoch


def cmd_train(args: argparse.Namespace) -> int:
    from .artefacts import write_train
    from .experiment import FStarSource
    from .files import lock_out, prepare_out
    from .train import fit

    (config,) = configs_from_args(args)
    split = load_data(args, [config])
    out = prepare_out(args.out)  # only once all input is known good: a refusal writes nothing
    lock_out(out)
    star = FStarSource(split, args.optimum, progress=not args.quiet)(config)
    bar, on_epoch = _progress(args, config.epochs, f"{config.optimizer} bs={config.batch_size}",
                              lines=True)
    (record,) = fit(config, split, f_star=[star], on_epoch=on_epoch)
    bar.close()
    write_train(out, record, split, star)
    if record.status == "diverged":
        print(f"stochopt: the run diverged (non-finite or exploding loss) at epoch "
              f"{record.diverged_epoch}; try a smaller --lr. Results so far are in {out}",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"test loss {record.test_loss:.4f}  test accuracy {record.test_acc:.2f}%  "
              f"-> {out}")
    return 0


def cmd_many(args: argparse.Namespace) -> int:
    """compare, sweep and tune: train (or resume) every configuration, then tables, figures,
    report."""
    from . import artefacts, experiment

    configs = configs_from_args(args)
    engine = engine_from_args(args)
    targets = Targets(args.target_acc, args.target_subopt)
    # Ray: joined first (a wrong address or a task no node fits is refused before any data
    # is read or any file written); the driver keeps the data on its CPU, each task moves it
    # to its own device
    remote = args.engine == "ray"
    if remote:
        engine.start()
    split = load_data(args, configs, "cpu" if remote else None)
    out = experiment.open_out(args.out, split, getattr(engine, "device", None))
    bar, on_epoch = _progress(args, sum(c.epochs for c in configs), args.command, lines=False)
    failed = []

    def on_group(group: list[Config], status: str) -> None:
        if status == "kept":
            bar.update(sum(c.epochs for c in group))
            bar.write(f"{len(group)} finished run(s) kept from {out}")
        elif status.startswith("failed"):
            failed.append(group)
            bar.update(sum(c.epochs for c in group))
            bar.write(f"stochopt: error: a group of {experiment.describe(group)} "
                      f"{status.replace(': ', ' (', 1)})", file=sys.stderr)

    noise = args.noise_scale
    if noise is None:
        noise = len({c.batch_size for c in configs}) > 1
    f_star = experiment.FStarSource(split, args.optimum, progress=not args.quiet)
    records = experiment.run(configs, split, out, f_star, on_epoch, on_group, engine, noise,
                             args.group_size)
    bar.close()
    if failed:
        n = sum(len(g) for g in failed)
        print(f"stochopt: {n} run(s) in {len(failed)} group(s) failed (status 'failed' in "
              f"results.csv); run the same command again to retry them", file=sys.stderr)
    found = artefacts.write_all(out, records, f"stochopt {args.command}", split,
                                f_star.optima, targets, tuned=args.command == "tune")
    best = artefacts.best(found.summary)
    if not args.quiet and found.summary:  # empty when every run failed: no report
        width = max(len(r["config"]) for r in found.summary)
        picked = {c["best"]["config"] for c in found.chosen if c["best"]}
        for r in found.summary:
            if picked and r["config"] not in picked:
                continue  # tune: the grid is in summary.csv; the chosen ones here
            print(f"{r['config']:<{width}}  bs {r['batch_size']:<5} {r['n_seeds']} seed(s)  "
                  f"val acc {r['final_val_acc_mean']:6.2f}%  test acc "
                  f"{r['test_acc_mean']:6.2f}%  diverged {r['n_diverged']}")
        for c in found.chosen:
            lr = "none (all diverged)" if c["best"] is None else f"{c['best']['lr']:.3g}"
            print(f"tuned {c['tuned']} at batch {c['batch_size']}: lr {lr}"
                  + (" (at the grid's edge)" if c["at_grid_edge"] else ""))
        if best:
            print(f"best by mean validation loss: {best['config']} "
                  f"({best['final_val_loss_mean']:.4f})")
        print(f"-> {out / 'report.html'}")
    return 0 if best and not failed else 1


def engine_from_args(args: argparse.Namespace):
    """The engine the flags name; Ray's flags only with --engine ray."""
    from .experiment import LocalEngine

    if args.group_size is not None and args.group_size < 1:
        raise StochoptError(f"--group-size must be at least 1, got {args.group_size}")
    if args.ray_cpus_per_task is not None and args.ray_cpus_per_task < 1:
        raise StochoptError(f"--ray-cpus-per-task must be at least 1, got "
                            f"{args.ray_cpus_per_task}")
    if args.engine == "local":
        given = [f for f, v in (("--ray-address", args.ray_address),
                                ("--ray-cpus-per-task", args.ray_cpus_per_task)) if v is not None]
        if given:
            raise StochoptError(f"{' and '.join(given)} "
                                f"{'apply' if len(given) > 1 else 'applies'} to --engine ray only")
        return LocalEngine()
    from .ray_engine import RayEngine, import_ray

    import_ray()  # before anything else: one line if Ray is missing
    device = check_device(args.device, here=False).type  # the nodes' GPUs, not this machine's
    return RayEngine(args.ray_address, args.ray_cpus_per_task or 1, device=device)


def cmd_optimum(args: argparse.Namespace) -> int:
    from .optim import Rule
    from .optimum import write_optimum

    (wd,) = args.weight_decay
    Rule.weight_decay.check(wd)  # before the data is read
    split = load_data(args)
    print(json.dumps(write_optimum(split, wd, args.out), indent=2))
    return 0


def cmd_noise_scale(args: argparse.Namespace) -> int:
    from .files import prepare_out, write_json
    from .noise import noise_scales

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
    from . import landscape

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


def load_weights(path: str, shape: tuple[int, int]):
    """A weights file of the given shape, or one line saying what is wrong with it."""
    import numpy as np

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


COMMANDS = {"train": cmd_train, "compare": cmd_many, "sweep": cmd_many, "tune": cmd_many,
            "optimum": cmd_optimum, "noise-scale": cmd_noise_scale, "landscape": cmd_landscape}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SettingError as e:
        print(f"stochopt: error: {e.flags()}", file=sys.stderr)
        return 2
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
