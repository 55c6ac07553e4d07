"""``stochopt compare``, ``sweep`` and ``tune``: a study of many runs, resumable, on the local
or the Ray engine, with its tables, figures and report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import Config, RunRecord
from ..errors import StochoptError
from ..study import artefacts, experiment
from ..study.analysis import Targets
from ..study.experiment import LocalEngine
from ..study.folder import load_run, open_out
from ..study.ray_engine import RayEngine, import_ray
from ..train import check_checkpoint_every
from .common import check_device, configs_from_args, load_data, progress


def cmd_many(args: argparse.Namespace) -> int:
    """compare, sweep and tune: train (or resume) every configuration, then tables, figures,
    report."""
    code, *_ = study(args, configs_from_args(args))
    return code


def study(args: argparse.Namespace, configs: list[Config]
          ) -> tuple[int, Path, list[RunRecord], artefacts.Findings]:
    """Train (or resume) ``configs`` as the flags say, write the tables, figures and report,
    print the summary; the exit code, the folder, the records and the tables."""
    engine = engine_from_args(args)
    targets = Targets(args.target_acc, args.target_subopt)
    # Ray: joined first (a wrong address or a task no node fits is refused before any data
    # is read or any file written); the driver keeps the data on its CPU, each task moves it
    # to its own device
    remote = args.engine == "ray"
    if remote:
        engine.start()
    split = load_data(args, configs, "cpu" if remote else None)
    out = open_out(args.out, split, getattr(engine, "device", None), configs)
    bar, on_epoch = progress(args, sum(c.epochs for c in configs), args.command, lines=False)
    failed = []

    last_page = [time.monotonic()]
    settled = [0]  # runs trained, kept or failed so far

    def progress_page() -> None:
        """At most every 10 s: report.html from the runs stored so far; not after the last
        group, whose final report follows at once."""
        if time.monotonic() - last_page[0] < 10 or settled[0] == len(configs):
            return
        last_page[0] = time.monotonic()
        done = [r for c in configs if (r := load_run(out / "runs" / f"{c.run_id}.json"))]
        artefacts.write_progress_page(out, done, f"stochopt {args.command}", targets)

    def on_group(group: list[Config], status: str) -> None:
        settled[0] += len(group)
        if status == "trained":
            progress_page()
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
                             args.group_size, args.checkpoint_every)
    bar.close()
    if failed:
        n = sum(len(g) for g in failed)
        print(f"stochopt: {n} run(s) in {len(failed)} group(s) failed (status 'failed' in "
              f"results.csv); run the same command again to retry them", file=sys.stderr)
    found = artefacts.write_all(out, records, f"stochopt {args.command}", split,
                                f_star.optima, targets, tuned=args.command == "tune",
                                weight_images=getattr(args, "weight_images", None))
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
    return (0 if best and not failed else 1), out, records, found


def engine_from_args(args: argparse.Namespace):
    """The engine the flags name; Ray's flags only with --engine ray."""
    check_checkpoint_every(args.checkpoint_every)  # before any data is read
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
    import_ray()  # before anything else: one line if Ray is missing
    device = check_device(args.device, here=False).type  # the nodes' GPUs, not this machine's
    return RayEngine(args.ray_address, args.ray_cpus_per_task or 1, device=device)
