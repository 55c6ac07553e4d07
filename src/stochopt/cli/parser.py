"""The command line's parser: every flag, its help and its check, read off the declarations
(each optimiser's settings in :mod:`stochopt.optim`, Config's in :mod:`stochopt.config`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..config import Config
from ..data import DATASETS, is_array_dataset
from ..errors import StochoptError
from ..landscape import FUNCTIONS
from ..optim import RULES
from ..optim.schedules import DECAY, SCHEDULES
from ..settings import Setting
from ..study.analysis import Targets
from ..version import __version__

PRESETS = {  # values a preset sets unless the flag is given
    "exercise": {},
    "deepobs": {"bias": True, "batch_size": [128], "epochs": [50], "val_fraction": 1 / 6},
}


SEEDS = [0, 1, 2, 3, 4]  # compare, sweep and tune: five data orders, one batch


LISTED = ("lr", "batch_size", "epochs", "schedule", "lr_decay", "step_size", "warmup_epochs",
          "seed", "train_metrics", "eval_every", "eval_points")  # Config settings given as
# flags (lists for compare/sweep)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the command whose --help tells more."""

    def error(self, message: str):  # one line, not argparse's usage block
        raise StochoptError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse reports a subcommand's unknown flag from the top parser, as if it were
        # stochopt's; here the subcommand's parser reports it, naming its own --help
        known, extra = self.parse_known_args(args, namespace)
        if extra:
            self._command_parser(getattr(known, "command", None)).error(
                f"unrecognized arguments: {' '.join(extra)}")
        return known

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self


def _dataset(text: str) -> str:
    if text in DATASETS or is_array_dataset(text):
        return text
    raise argparse.ArgumentTypeError(f"--dataset {text!r} is not one of mnist, idx, digits, "
                                     "npz:PATH, svmlight:PATH")


def _log_points(text: str) -> int:
    """``log:K`` (or K): K log-spaced evaluation points."""
    count = text.removeprefix("log:")
    if not count.isdigit():
        raise ValueError(text)
    return int(count)


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
                f"{flag} must be "
                f"{({int: 'an integer', float: 'a number'}).get(kind, 'log:K, K a count')}, "
                f"got {text!r}"
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


def _add_train_args(p: argparse.ArgumentParser, many: bool, optimizer: bool = True) -> None:
    """Training flags; with ``many`` (compare, sweep) each takes a comma-separated list;
    without ``optimizer`` no --optimizer (the zoo's come from its module)."""
    g = p.add_argument_group("training (lists are comma-separated; every combination is "
                             "trained)" if many else "training")
    lrs = {name: rule.lr.default for name, rule in RULES.items()}
    schedules = {name: rule.default_schedule for name, rule in RULES.items()}
    if optimizer:
        g.add_argument("--optimizer", "--optimizers", dest="optimizer", type=_parse(str, ""),
                       default=["momentum"], metavar="NAME",
                       help=f"one of {', '.join(RULES)}, or MODULE:NAME, a torch optimizer "
                       "of an importable module or a .py file, e.g. torch.optim:NAdam "
                       "(default: momentum)")
    else:
        p.set_defaults(optimizer=["momentum"])  # the zoo's optimisers come from its module
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
    g = p.add_argument_group("evaluation points (besides each epoch's end; they change no "
                             "number of training)")
    g.add_argument("--eval-every", type=_parse(int, "--eval-every"), default=None,
                   metavar="N", help="also evaluate every N steps: validation loss and "
                   "accuracy, f - f* and the noise scale when measured, a row each")
    g.add_argument("--eval-points", type=_parse(_log_points, "--eval-points"), default=None,
                   metavar="log:K", help="also evaluate at K log-spaced steps over the run")
    if many:
        g = p.add_argument_group("training")
        g.add_argument("--scale-lr", action="store_true",
                       help="linear scaling rule: multiply each lr by batch size / 64")
    g.add_argument("--hp", action="append", default=None, metavar="NAME=VALUE",
                   help="a hyperparameter by its constructor's name, for any optimizer and "
                   "for MODULE:NAME plug-ins (read off their signature): a number, True/False, "
                   "a tuple in parentheses (\"betas=(0.9,0.99)\"); repeatable"
                   + ("; a comma list is crossed like the other lists" if many else "")
                   + "; a plug-in's own weight_decay is its own, --weight-decay the "
                   "objective's L2 term")
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
    g.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="save each group's training state every N epochs beside its files, "
                   "so that the same command after a kill resumes it mid-run (default: each "
                   "epoch, at most once a minute; 0: never)")
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
    many["zoo"] = (
        "every optimizer a module exports, at its defaults, measured as compare measures",
        "Train every optimizer MODULE exports (pytorch_optimizer: its "
        "get_supported_optimizers(); torch.optim or any module: its Optimizer subclasses; "
        "stochopt: its registry) at its defaults, each in a group of its own, and write "
        "compare's files plus zoo.csv: one row per exported optimizer with its status "
        "(trained, failed, unsupported) and the reason.", {})
    for name, (help_, description, defaults) in many.items():
        p = sub.add_parser(name, help=help_, description=description)
        _add_train_args(p, many=True, optimizer=name != "zoo")
        _add_data_args(p)
        p.set_defaults(**defaults)
        if name == "zoo":
            p.add_argument("module", metavar="MODULE",
                           help="pytorch_optimizer, torch.optim, stochopt, or any module")
            p.add_argument("--max-epoch-seconds", type=float, default=None, metavar="S",
                           help="time each optimizer's step first (30 steps) and list one "
                           "whose epoch would take longer than S seconds here with its "
                           "measured step time instead of training it (default: no cap)")
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
                      "the picture teaches something; see docs/landscapes.md)")
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

    report = sub.add_parser("report", help="rebuild a folder's tables, figures and page",
                            description="Rebuild results.csv, the summary and comparison "
                            "tables, the figures, report.md and the interactive report.html "
                            "from a folder's stored runs, without training: after an upgrade, "
                            "or for a folder a Ray study wrote.")
    report.add_argument("folder", metavar="DIR", help="a folder compare, sweep, tune or zoo "
                        "wrote")
    return parser
