"""The Ray engine against the local engine, and the numbers of the scaling model.

On this machine: a local two-node Ray cluster (two single-CPU nodes, in a loopback-only
network namespace: see loopback_cluster.py) against the local engine, on a small MNIST
sweep (2 batch sizes x 3 lrs x 2 seeds, 2 epochs, groups of at most 4 models: 4 groups),
each a fresh ``stochopt`` process timed from start to end. Then:

- Ray's start-up (``ray start`` of both nodes) and its own per-task overhead: the round
  trip of a task that does nothing, and each sweep task's time beyond training and data;
- the two ways for the data to reach a node, each timed in a task on each node: from Ray's
  object store (what the engine does) or read from the IDX files with their checksums;
- the cost of training, seconds per model-epoch at each batch size (one thread, a group of
  K models at once), from which the README predicts the 36,000-run study's wall time.

    python benchmarks/bench_ray.py [--out benchmarks/results] [--tiny]

Needs Ray (pip install -e ".[ray]") and root (for the namespace). Nothing here is a test:
timings vary with the machine's load; compare the numbers of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback_cluster import LoopbackCluster

from stochopt.files import write_csv, write_json

SWEEP = ["sweep", "--lrs", "0.01,0.03,0.1", "--batch-sizes", "64,256", "--seeds", "0,1",
         "--epochs", "2", "--group-size", "4", "--optimum", "skip", "--quiet"]

PROBE = r'''
import json, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from stochopt.data import load_split
from stochopt.study.ray_engine import pack, unpack

address, data_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
connect = time.perf_counter() - t0

@ray.remote(num_cpus=1)
def noop():
    return 0

@ray.remote(num_cpus=1)
def data_paths(data, data_dir):
    import stochopt.study.ray_engine  # imported before the clock starts, as in a sweep's task
    t0 = time.perf_counter()
    unpack(ray.get(data[0]), "cpu")
    t1 = time.perf_counter()
    load_split(data_dir)
    return {"store": t1 - t0, "read": time.perf_counter() - t1,
            "node": ray.get_runtime_context().get_node_id()}

ray.get(noop.remote())  # a warm worker
t0 = time.perf_counter()
for _ in range(n):
    ray.get(noop.remote())
round_trip = (time.perf_counter() - t0) / n
t0 = time.perf_counter()
ray.get([noop.remote() for _ in range(n)])
pipelined = (time.perf_counter() - t0) / n
t0 = time.perf_counter()
data = ray.put(pack(load_split(data_dir)))
put = time.perf_counter() - t0
nodes = [x["NodeID"] for x in ray.nodes() if x["Alive"]]
paths = []
for node in nodes:  # a fresh object per node: nothing cached by an earlier task
    one = ray.put(pack(load_split(data_dir))) if paths else data
    paths.append(ray.get(data_paths.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote([one], data_dir)))
here = ray.get_runtime_context().get_node_id()
print(json.dumps({"connect": connect, "round_trip": round_trip, "pipelined": pipelined,
                  "put": put, "paths": paths, "nodes": len(nodes), "driver_node": here}))
'''


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr[-1500:]}")
    return time.perf_counter() - t0


def per_model_epoch(batch_sizes: list[int], k_lrs: int, seeds: int, optimizer: str = "adam"
                    ) -> dict[int, float]:
    """Seconds per model-epoch of one group of K = k_lrs x seeds models, one thread."""
    import torch

    from stochopt.config import Config
    from stochopt.data import load_split
    from stochopt.train import fit

    torch.set_num_threads(1)
    split = load_split(os.environ.get("STOCHOPT_DATA"))
    cost = {}
    for bs in batch_sizes:
        configs = [Config(optimizer=optimizer, lr=1e-3 * 2 ** i, batch_size=bs, epochs=1,
                          seed=s) for i in range(k_lrs) for s in range(seeds)]
        records = fit(configs, split)
        cost[bs] = records[0].rows[0]["seconds"] / len(configs)
    return cost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tiny", action="store_true", help="a quick check that it runs")
    args = p.parse_args()
    data_dir = os.environ.get("STOCHOPT_DATA")
    if not data_dir:
        raise SystemExit("set STOCHOPT_DATA to the MNIST folder")
    rows: list[dict] = []

    def row(what: str, seconds: float, note: str = "") -> None:
        rows.append({"what": what, "seconds": round(seconds, 4), "note": note})
        print(f"{what:<58} {seconds:9.3f} s  {note}", flush=True)

    sweep = list(SWEEP)
    if args.tiny:
        sweep[sweep.index("--epochs") + 1] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        local = timed([sys.executable, "-m", "stochopt", *sweep, "--data-dir", data_dir,
                       "--out", f"{tmp}/local"])
        row("local engine: the test sweep, whole command", local, "2 threads, one process")
        cluster = LoopbackCluster(nodes=2)
        try:
            row("ray start: head + second node", cluster.start_seconds)
            ray_wall = timed(cluster.command([
                sys.executable, "-m", "stochopt", *sweep, "--data-dir", data_dir, "--out",
                f"{tmp}/ray", "--engine", "ray", "--ray-address", cluster.address]),
                cluster.env)
            row("ray engine, 2 nodes x 1 CPU: the same sweep, whole command", ray_wall,
                f"{ray_wall / local:.2f}x the local engine")
            same = pd.read_csv(f"{tmp}/local/results.csv").drop(columns="seconds").equals(
                pd.read_csv(f"{tmp}/ray/results.csv").drop(columns="seconds"))
            tasks = pd.read_csv(f"{tmp}/ray/tasks.csv")
            local_tasks = pd.read_csv(f"{tmp}/local/tasks.csv")
            # a worker's first task: submitted -> began (its start, imports) + the return;
            # a reused worker's: its previous task's end -> began + the return
            tasks = tasks.sort_values("wait_seconds")
            begun = tasks.seconds - tasks.fit_seconds - tasks.data_seconds - \
                tasks.return_seconds  # = wait_seconds, on the driver's clock
            first = tasks.groupby("pid").head(1)
            fresh = (first.wait_seconds + first.return_seconds).tolist()
            warm = []
            for _, mine in tasks.groupby("pid"):
                ends = (mine.wait_seconds + mine.data_seconds + mine.fit_seconds).tolist()
                warm += [w - e + r for w, e, r in zip(mine.wait_seconds.tolist()[1:], ends[:-1],
                                                      mine.return_seconds.tolist()[1:],
                                                      strict=True)]
            assert (abs(begun - tasks.wait_seconds) < 0.05).all()
            row("  training, sum over groups (ray, 1 thread each)", tasks.fit_seconds.sum())
            row("  training, sum over groups (local, 2 threads)", local_tasks.fit_seconds.sum())
            row("  per-task overhead, a worker's first task (median)",
                statistics.median(fresh) if fresh else float("nan"),
                "queue, worker start, imports, result transfer")
            row("  per-task overhead, a reused worker (median)",
                statistics.median(warm) if warm else float("nan"),
                "from its previous task's end to the next one's start, and the transfer")
            probe = subprocess.run(cluster.command([
                sys.executable, "-c", PROBE, cluster.address, data_dir,
                "20" if args.tiny else "200"]), env=cluster.env, capture_output=True,
                text=True)
            if probe.returncode != 0:
                raise SystemExit(f"probe failed: {probe.stderr[-1500:]}")
            found = json.loads(probe.stdout.strip().splitlines()[-1])
            row("ray.init: a driver joining the cluster", found["connect"])
            row("a no-op task, round trip (sequential, mean)", found["round_trip"])
            row("a no-op task, pipelined (mean)", found["pipelined"])
            row("the split into the object store (ray.put, once)", found["put"])
            for path in found["paths"]:
                where = "the driver's node" if path["node"] == found["driver_node"] \
                    else "the other node"
                row(f"data on {where}: from the object store", path["store"])
                row(f"data on {where}: read from the IDX files, checked", path["read"])
        finally:
            cluster.stop()
    sizes = [64, 256] if args.tiny else [32, 64, 128, 256, 512]
    k_lrs, seeds = (1, 2) if args.tiny else (4, 10)
    cost = per_model_epoch(sizes, k_lrs, seeds)
    for bs, c in cost.items():
        row(f"training, one model-epoch at batch {bs} (K={k_lrs * seeds}, 1 thread)", c)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench_ray.csv", rows, ["what", "seconds", "note"])
    write_json(out / "bench_ray.json", {"rows": rows, "identical_results": bool(same),
                                        "ratio_ray_to_local": ray_wall / local,
                                        "model_epoch_seconds": cost, "tiny": args.tiny})
    print(f"results.csv identical (seconds aside): {same}; ray / local = "
          f"{ray_wall / local:.2f}x")


if __name__ == "__main__":
    main()
