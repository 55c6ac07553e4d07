"""The leaderboard: every optimiser of stochopt's registry and of pytorch-optimizer on the
exercise's problem (batch 64, 10 epochs, weight decay 1e-4, so that f* is certified),
ranked by final f - f* and by validation accuracy, each with its 95% interval and a paired
verdict against the best (Holm-corrected over the comparisons with it).

    python benchmarks/leaderboard.py [--out runs/leaderboard] [--max-epoch-seconds 20]
                                     [--engine ray --ray-address HOST:PORT --jobs 2]

On this 2-core machine, as documented (a two-node Ray cluster in a loopback-only network
namespace, started before and stopped after; as root):

    python benchmarks/loopback_cluster.py --nodes 2 -- \
        python benchmarks/leaderboard.py --engine ray --jobs 2

Every stage is a stochopt command (printed as it starts) writing its own folder under
--out, so the same command after an interruption keeps what finished:

1. ``stochopt zoo MODULE`` for each of --modules: every optimiser at its defaults, --seeds
   (one whose epoch would take longer than --max-epoch-seconds is listed with its measured
   step time instead);
2. ``stochopt tune``: the natives and the --top best plug-ins at their defaults, each lr
   on the same log grid around its default (--lr-points over --lr-decades), --tune-seeds;
3. ``stochopt compare`` of each tuned optimiser at its chosen lr, --seeds;
4. the table: each optimiser's ranked row is its tuned run when it has one, else its
   defaults'; ``benchmarks/results/leaderboard.csv`` (one row per optimiser: ``optimizer``,
   the ``lr`` of its ranked row, summary.csv's columns, the two verdicts and ranks) and
   ``docs/leaderboard.md``, and the top 10 into the README (between its leaderboard marks).

``--optimizers a,b`` replaces stage 1's zoos by one ``stochopt compare`` of those (the
test suite runs two optimisers for one epoch so).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stochopt.cli import main as stochopt_main
from stochopt.files import safe_name, write_csv, write_text
from stochopt.study.stats import holm, interval, p_value, paired, verdict

HERE = Path(__file__).resolve().parent
KEPT = ["optimizer", "lr", "n_seeds", "n_diverged", "final_val_acc_mean", "final_val_acc_sd",
        "final_val_acc_ci95_low", "final_val_acc_ci95_high", "final_val_loss_mean",
        "test_acc_mean", "test_acc_ci95_low", "test_acc_ci95_high", "suboptimality_median",
        "reached_subopt", "median_grad_evals_to_subopt", "seconds_per_epoch"]
COLUMNS = ["rank_subopt", "rank_val_acc", *KEPT[:1], "source", "tuned", *KEPT[1:],
           "final_subopt_mean", "final_subopt_ci95_low", "final_subopt_ci95_high",
           "subopt_vs_best", "subopt_p_holm", "val_acc_vs_best", "val_acc_p_holm",
           "status", "reason", "seconds_per_step"]


def stochopt(args: argparse.Namespace, command: str, out: Path, *extra: str,
             alone: bool = False, group: int = 0) -> Path:
    """Run one stochopt command into ``out`` (kept if it finished before): in this process,
    or (``alone``) in a process of its own, so that several can run at once."""
    argv = [command, *extra, "--out", str(out), "--quiet", "--epochs", str(args.epochs),
            "--batch-size", "64", "--weight-decay", str(args.weight_decay),
            "--target-subopt", "1e-2", "--optimum", "solve"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.dataset != "mnist":
        argv += ["--dataset", args.dataset]
    if args.engine != "local":  # zoo, tune and compare train their groups on the cluster,
        # each optimiser's runs a group of their own (not one batch of every native: a slow
        # one would hold up the rest on one node)
        argv += ["--engine", args.engine, "--ray-cpus-per-task", "1"]
        argv += ["--ray-address", args.ray_address] if args.ray_address else []
        argv += ["--group-size", str(group)] if group else []
    print("+ stochopt " + " ".join(shlex.quote(a) for a in argv), flush=True)
    # exit 1: some runs failed or diverged, which the table shows
    code = subprocess.run([sys.executable, "-m", "stochopt", *argv]).returncode if alone \
        else stochopt_main(argv)
    if code not in (0, 1) or not (out / "summary.csv").is_file():
        raise SystemExit(f"leaderboard: stochopt {command} failed (exit {code})")
    return out


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def per_seed(folder: Path, metric: str) -> dict[str, dict[int, float]]:
    """optimizer -> seed -> the metric of its run (runs.csv), NaN when it diverged."""
    values: dict[str, dict[int, float]] = {}
    for row in table(folder / "runs.csv"):
        values.setdefault(row["optimizer"], {})[int(row["seed"])] = number(row[metric])
    return values


def against_best(rows: list[dict], seeds: dict[str, dict[int, float]], metric: str,
                 lower_is_better: bool, column: str) -> None:
    """Rank ``rows`` by their mean ``metric`` and give each its paired verdict against the
    best (the differences by seed; Holm over the comparisons with the best)."""
    mean = f"final_{metric}_mean"
    ranked = sorted((r for r in rows if math.isfinite(r[mean])),
                    key=lambda r: r[mean] if lower_is_better else -r[mean])
    for i, r in enumerate(ranked):
        r[f"rank_{metric}"] = i + 1
    if not ranked:
        return
    best = ranked[0]
    diffs = [paired(seeds[r["optimizer"]], seeds[best["optimizer"]]) for r in ranked[1:]]
    adjusted = holm([p_value(d) for d in diffs])
    best[f"{column}_vs_best"] = "best"
    for r, d, p in zip(ranked[1:], diffs, adjusted, strict=True):
        said = verdict(d, lower_is_better, p)
        r[f"{column}_vs_best"] = {"a better": "better", "b better": "worse"}.get(said, said)
        r[f"{column}_p_holm"] = p


def assemble(stage1: list[Path], final: list[Path]) -> list[dict]:
    """One row per optimiser: its tuned row when it has one, else its defaults' row; the
    ones that did not train, with why."""
    rows: dict[str, dict] = {}
    acc: dict[str, dict[int, float]] = {}
    sub: dict[str, dict[int, float]] = {}
    for folder, is_tuned in [*((f, False) for f in stage1), *((f, True) for f in final)]:
        zoo = {r["optimizer"]: r for r in table(folder / "zoo.csv")} \
            if (folder / "zoo.csv").is_file() else {}
        accs, subs = per_seed(folder, "final_val_acc"), per_seed(folder, "suboptimality")
        for s in table(folder / "summary.csv"):
            name = s["optimizer"]
            row = {k: number(s[k]) if k not in ("optimizer",) else s[k] for k in KEPT}
            row.update(source="native" if ":" not in name else name.split(":")[0],
                       tuned=is_tuned, status="trained",
                       seconds_per_step=zoo.get(name, {}).get("seconds_per_step", ""))
            i = interval(subs[name].values())
            row.update(final_subopt_mean=i.mean, final_subopt_ci95_low=i.low,
                       final_subopt_ci95_high=i.high)
            if is_tuned or name not in rows:  # the tuned row replaces the defaults' one
                rows[name] = row
                acc[name], sub[name] = accs[name], subs[name]
        for name, z in zoo.items():
            if z["status"] != "trained" and name not in rows:
                rows[name] = {"optimizer": name, "status": z["status"], "reason": z["reason"],
                              "source": name.split(":")[0] if ":" in name else "native",
                              "seconds_per_step": z["seconds_per_step"]}
    trained = [r for r in rows.values() if r["status"] == "trained"]
    against_best(trained, sub, "subopt", True, "subopt")
    against_best(trained, acc, "val_acc", False, "val_acc")
    return sorted(rows.values(), key=lambda r: (r.get("rank_subopt", math.inf),
                                                r.get("rank_val_acc", math.inf),
                                                r["optimizer"]))


def f(x: object, spec: str) -> str:
    """A number of the table in ``spec``; "-" for a missing one (NaN, or not a number)."""
    return format(x, spec) if isinstance(x, float) and math.isfinite(x) else "-"


def with_interval(r: dict, metric: str, spec: str) -> str:
    """``mean (low-high)`` of ``final_{metric}``; "-" where it is not defined (f - f* of a
    rule whose decay is decoupled: it minimises another objective)."""
    mean, low, high = (r.get(f"final_{metric}_{k}") for k in ("mean", "ci95_low", "ci95_high"))
    if not (isinstance(mean, float) and math.isfinite(mean)):
        return "-"
    if not all(isinstance(x, float) and math.isfinite(x) for x in (low, high)):
        return format(mean, spec)
    return f"{mean:{spec}} ({low:{spec}}-{high:{spec}})"


MARKS = ("<!-- leaderboard: generated by benchmarks/leaderboard.py -->",
         "<!-- /leaderboard -->")


def top(rows: list[dict], n: int, command: str, hours: float) -> str:
    """The ``n`` best by validation accuracy, with their 95% intervals and f - f*: the
    README's block between :data:`MARKS`."""
    best = sorted((r for r in rows if "rank_val_acc" in r), key=lambda r: r["rank_val_acc"])
    lines = [MARKS[0], "", f"The top {min(n, len(best))} of [the leaderboard]"
             "(docs/leaderboard.md) (`" + command + f"`, {hours:.2f} hours here), by final "
             "validation accuracy at batch 64 after 10 epochs, means over 5 seeds with 95% "
             "intervals (f - f* is left out where the weight decay is decoupled: such a rule "
             "minimises another objective):", "",
             "| # | optimizer | lr | val acc % (95% CI) | vs best | f - f* (95% CI) |",
             "|---|---|---|---|---|---|"]
    for r in best[:n]:
        lines.append(
            f"| {r['rank_val_acc']} | `{r['optimizer']}` | {f(r['lr'], 'g')} | "
            f"{with_interval(r, 'val_acc', '.2f')} | {r.get('val_acc_vs_best', '-')} | "
            f"{with_interval(r, 'subopt', '.4f')} |")
    return "\n".join([*lines, "", MARKS[1]])


def into_readme(path: Path, block: str) -> bool:
    """Replace the README's block between :data:`MARKS` (False: it has none)."""
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(MARKS[0]), text.find(MARKS[1])
    if start < 0 or end < start:
        return False
    write_text(path, text[:start] + block + text[end + len(MARKS[1]):])
    return True


def markdown(rows: list[dict], command: str, hours: float, dataset: str, engine: str) -> str:
    lines = ["# Leaderboard", "",
             "Every optimiser of stochopt's registry and of pytorch-optimizer on the exercise's "
             f"problem ({'MNIST' if dataset == 'mnist' else dataset}, batch 64, weight decay "
             "1e-4 so that f* is certified), ranked by "
             "final f - f* and by validation accuracy: means over the seeds with 95% t "
             "intervals, each compared with the best by a paired t-test over the seeds, "
             "Holm-corrected over the comparisons with the best; f - f* is '-' for a rule "
             "whose weight decay is decoupled (it minimises another objective), which ranks "
             "by validation accuracy only. The natives and the best "
             "plug-ins at their defaults have their lr tuned on one grid for all (`tuned`); "
             "the others ran at their defaults. Generated by", "",
             f"    {command}", "", f"in {hours:.2f} hours on our 2-core CPU"
             + (", on a Ray cluster of two single-CPU nodes of this machine (`python "
                "benchmarks/loopback_cluster.py --nodes 2 --` before the command starts one in "
                "a network namespace with only loopback, and stops it after)."
                if engine == "ray" else "."),
             "",
             "| # | optimizer | lr | tuned | f - f* (95% CI) | vs best | val acc % (95% CI) "
             "| vs best | grad evals to f - f* < 1e-2 | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "trained":
            continue
        lines.append(
            f"| {r.get('rank_subopt', '-')} | `{r['optimizer']}` | {f(r['lr'], 'g')} | "
            f"{'yes' if r['tuned'] else 'no'} | {with_interval(r, 'subopt', '.4f')} | "
            f"{r.get('subopt_vs_best', '-')} | {with_interval(r, 'val_acc', '.2f')}"
            f" | {r.get('val_acc_vs_best', '-')} | "
            f"{f(r['median_grad_evals_to_subopt'], ',.0f')} | "
            f"{f(r['seconds_per_epoch'], '.3f')} |")
    others = [r for r in rows if r["status"] != "trained"]
    if others:
        lines += ["", "Not ranked:", ""]
        lines += [f"- `{r['optimizer']}`: {r['status']}, {r['reason']}" for r in others]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/leaderboard")
    p.add_argument("--modules", default="stochopt,pytorch_optimizer")
    p.add_argument("--optimizers", default=None, help="these instead of the modules' zoos")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--tune-seeds", default="0,1")
    p.add_argument("--lr-points", type=int, default=7)
    p.add_argument("--lr-decades", type=float, default=2.0)
    p.add_argument("--top", type=int, default=20, help="plug-ins tuned besides the natives")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--max-epoch-seconds", type=float, default=20.0)
    p.add_argument("--data-dir", default=os.environ.get("STOCHOPT_DATA"))
    p.add_argument("--dataset", default="mnist", help="as stochopt's --dataset (the test: digits)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: every stage's groups on a Ray cluster, one CPU each (a plug-in's "
                        "step is Python-bound: two single-CPU workers train two groups at once "
                        "where the local engine's two threads train one)")
    p.add_argument("--ray-address", default=None, help="the cluster (default: Ray's own)")
    p.add_argument("--jobs", type=int, default=1,
                   help="stage 3's compare commands run this many at once, each in its own "
                        "process (with --engine ray: as many as the cluster has nodes)")
    p.add_argument("--results", default=str(HERE / "results" / "leaderboard.csv"))
    p.add_argument("--page", default=str(HERE.parent / "docs" / "leaderboard.md"))
    p.add_argument("--tables-only", action="store_true",
                   help="rebuild the page and the README's block from --results, no training")
    p.add_argument("--readme", default=str(HERE.parent / "README.md"),
                   help="its top 10 goes between the README's leaderboard marks")
    args = p.parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    # a kill (SIGTERM) ends the study as an interruption does, its hours recorded
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return build(args, out, started)
    finally:  # an interrupted study's hours count when the same command resumes it
        spent(out, started, record=True)


def spent(out: Path, started: float, record: bool = False) -> float:
    """Hours the study has taken: this invocation's and those of the invocations that it
    resumes (``hours.txt`` in --out, written as each ends)."""
    ledger = out / "hours.txt"
    before = float(ledger.read_text()) if ledger.is_file() else 0.0
    now = before + (time.perf_counter() - started) / 3600
    if record:
        out.mkdir(parents=True, exist_ok=True)
        write_text(ledger, f"{now:.4f}\n")
    return now


def from_csv(path: Path) -> list[dict]:
    """The rows of a leaderboard.csv as :func:`assemble` made them (numbers, ranks, flags)."""
    text = {"optimizer", "source", "status", "reason", "subopt_vs_best", "val_acc_vs_best"}
    rows = []
    for r in table(path):
        row: dict = {}
        for k, v in r.items():
            if k in text:
                row[k] = v
            elif k == "tuned":
                row[k] = v == "True"
            elif k.startswith("rank_"):
                if v:
                    row[k] = int(float(v))
            else:
                row[k] = number(v)
        rows.append(row)
    return rows


def build(args: argparse.Namespace, out: Path, started: float) -> int:
    if args.tables_only:
        rows = from_csv(Path(args.results))
        return publish(args, out, started, rows)
    seeds = ["--seeds", args.seeds]
    if args.optimizers:
        stage1 = [stochopt(args, "compare", out / "defaults", "--optimizers", args.optimizers,
                           *seeds)]
    else:
        stage1 = [stochopt(args, "zoo", out / f"defaults-{m}", m, *seeds,
                           "--max-epoch-seconds", str(args.max_epoch_seconds),
                           group=len(args.seeds.split(",")))
                  for m in args.modules.split(",")]
    defaults = [r for f in stage1 for r in table(f / "summary.csv")]
    natives = [r["optimizer"] for r in defaults if ":" not in r["optimizer"]]
    plugins = sorted((r for r in defaults if ":" in r["optimizer"]),
                     key=lambda r: -number(r["final_val_acc_mean"]))
    chosen = natives + [r["optimizer"] for r in plugins[:args.top]]
    tune = stochopt(args, "tune", out / "tune", "--optimizers", ",".join(chosen),
                    "--seeds", args.tune_seeds, "--lr-points", str(args.lr_points),
                    "--lr-decades", str(args.lr_decades),
                    group=len(args.tune_seeds.split(",")) * args.lr_points)

    def compare(row: dict[str, str]) -> Path:
        return stochopt(args, "compare", out / "tuned" / safe_name(row["optimizer"]),
                        "--optimizers", row["optimizer"], "--lr", row["chosen_lr"], *seeds,
                        alone=args.jobs > 1)

    with ThreadPoolExecutor(args.jobs) as pool:  # each command its own process when > 1
        final = list(pool.map(compare, table(tune / "tuning.csv")))
    rows = assemble(stage1, final)
    write_csv(Path(args.results), rows, COLUMNS)
    return publish(args, out, started, rows)


def publish(args: argparse.Namespace, out: Path, started: float, rows: list[dict]) -> int:
    """docs/leaderboard.md and the README's top 10, from the assembled rows."""
    given, skip = [], False
    for a in sys.argv[1:]:  # the command as given, without where its two outputs went
        if a == "--tables-only":
            continue
        if skip or a.startswith(("--results", "--page", "--readme", "--ray-address")):
            skip = not skip and "=" not in a
            continue
        given.append(shlex.quote(a))
    command = " ".join(["python benchmarks/leaderboard.py", *given])
    hours = spent(out, started)
    write_text(Path(args.page), markdown(rows, command, hours, args.dataset, args.engine))
    if not into_readme(Path(args.readme), top(rows, 10, command, hours)):
        print(f"{args.readme} has no leaderboard block ({MARKS[0]}): left as it is")
    trained = sum(r["status"] == "trained" for r in rows)
    print(f"{len(rows)} optimizers, {trained} ranked, in {hours:.2f} h -> {args.results}, "
          f"{args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
