"""The Ray engine on a real two-node Ray cluster, each node one CPU, against the local engine.

The cluster runs inside a network namespace of its own that has only loopback (``unshare
-n``), so nothing it does can reach beyond this machine; the drivers join that namespace
(``nsenter``). The cluster is stopped by killing every process of the namespace."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import torch_threads

from stochopt.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from loopback_cluster import LoopbackCluster, can_make_namespace

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (it could not be "
                               "installed here): the Ray engine's cluster tests did not run")
TIMINGS = ["seconds", "batch_seconds", "elapsed"]  # results.csv's clocks, which runs differ in
EPOCHS = 100
SWEEP = ["sweep", "--dataset", "digits", "--lrs", "0.01,0.03,0.1", "--batch-sizes", "64,256",
         "--seeds", "0,1", "--epochs", str(EPOCHS), "--group-size", "4", "--optimum", "skip",
         "--quiet"]
# 12 runs in 4 groups (bs 64: 2+1 configurations x 2 seeds, likewise bs 256): two tasks per
# node, so a worker that held the data for its first task is seen reusing it. scikit-learn's
# digits: a fraction of a second per group, yet long enough for the killed driver's test to
# stop the driver between groups; MNIST's 48,000 rows (shipped to each worker) took most of
# a Ray test's time and check nothing more here


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = can_make_namespace()
    if why:
        pytest.fail(f"the Ray tests need a loopback-only network namespace (as root): {why}")
    c = LoopbackCluster(nodes=2)
    yield c
    c.stop()
    assert not c.processes()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The sweep on the local engine with one thread, as each Ray task trains (one CPU a
    task): the results every Ray run must give. The thread count is the arithmetic's: on
    some CPUs MKL sums a float32 product in another order on two threads than on one."""
    out = tmp_path_factory.mktemp("local") / "out"
    with torch_threads(1):
        assert main([*SWEEP, "--out", str(out)]) == 0
    return out


def results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").drop(columns=TIMINGS)


def assert_same_results(out: Path, reference: Path, rows: int = 12 * EPOCHS) -> None:
    a, b = results(out), results(reference)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == rows
    assert (a.select_dtypes(exclude="number") == b.select_dtypes(exclude="number")).all().all()
    np.testing.assert_allclose(a.select_dtypes("number").to_numpy(float),
                               b.select_dtypes("number").to_numpy(float), rtol=0, atol=1e-6)


def finish(driver: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Its exit code and its output, stdout then stderr."""
    out, err = driver.communicate(timeout=timeout)
    return driver.returncode, out + err


@needs_ray
def test_ray_sweep_equals_the_local_engine_on_both_nodes(cluster, local, tmp_path):
    out = tmp_path / "ray"
    code, err = finish(cluster.stochopt([*SWEEP, "--out", str(out)]))
    assert code == 0, err
    assert_same_results(out, local)
    assert {p.name for p in out.iterdir()} == {p.name for p in local.iterdir()}
    tasks = pd.read_csv(out / "tasks.csv")
    assert list(tasks.status) == ["trained"] * 4 and list(tasks.engine) == ["ray"] * 4
    assert tasks.node.nunique() == 2  # SPREAD: both nodes trained
    # the data reached each worker once: only a worker's first task fetched it
    assert (tasks.groupby("pid").fetched_data.sum() <= 1).all()
    assert (~tasks.fetched_data).any()


@needs_ray
def test_a_killed_driver_resumes_without_retraining_finished_groups(cluster, local, tmp_path):
    out = tmp_path / "ray"
    args = [*SWEEP, "--out", str(out)]
    driver = cluster.stochopt(args)
    deadline = time.time() + 120
    # 4 stored runs hold a whole group: the driver writes one group at a time, and a group
    # has at most 4 runs
    while len(list((out / "runs").glob("*.json"))) < 4 and time.time() < deadline:
        time.sleep(0.01)
    driver.kill()  # SIGKILL: no chance to tidy up
    driver.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert 4 <= len(kept) < 12, f"kill came too late or too early: {len(kept)} runs stored"
    code, err = finish(cluster.stochopt(args))
    assert code == 0, err
    assert "finished run(s) kept" in err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")
            if p.name in kept} == kept  # not written again
    tasks = pd.read_csv(out / "tasks.csv")
    assert (tasks.status == "kept").sum() >= 1 and (tasks.status == "trained").sum() >= 1
    assert tasks[tasks.status == "kept"].runs.sum() <= len(kept)
    assert_same_results(out, local)


CHECKPOINTED = ["compare", "--optimizers", "momentum,adam", "--seeds", "0,1", "--epochs", "40",
                "--batch-size", "8", "--dataset", "digits", "--optimum", "skip",
                "--checkpoint-every", "1", "--quiet"]


@needs_ray
def test_a_worker_killed_mid_run_resumes_from_its_checkpoint(cluster, tmp_path):
    """SIGKILL of the worker after its group's 10th checkpoint of 40: the driver submits the
    task again with the checkpoint the store actor wrote into its folder, and it trains only
    the rest, in another worker; the results equal the local engine's, bit for bit. (A
    killed worker retried to the same results: this test covers it, on a group with a
    checkpoint.) The kill may land anywhere in the 30 epochs after the 10th, about 0.7 s
    on a 2-core machine (the 20 after the 20th were missed once in five full runs)."""
    import torch

    local = tmp_path / "local"
    assert main([*CHECKPOINTED, "--out", str(local)]) == 0
    out = tmp_path / "ray"
    driver = cluster.stochopt([*CHECKPOINTED, "--out", str(out)])
    deadline, victim, epoch = time.time() + 240, None, 0
    while victim is None and time.time() < deadline and driver.poll() is None:
        found = list((out / "runs").glob("group-*.pt")) if (out / "runs").is_dir() else []
        if found and (epoch := torch.load(found[0], weights_only=False)["epoch"]) >= 10:
            busy = cluster.workers()
            if busy:
                victim = busy[0]
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    code, err = finish(driver)
    assert victim is not None, (f"no checkpointed task was seen running (last checkpoint "
                                f"seen: epoch {epoch}; the driver's exit code {code}): "
                                f"{err[-2000:]}")
    assert code == 0, err
    (task,) = pd.read_csv(out / "tasks.csv").to_dict("records")
    assert 10 <= task["resumed_from_epoch"] < 40 and task["pid"] != victim
    assert task["status"] == "trained" and task["engine"] == "ray"
    a = pd.read_csv(out / "results.csv").drop(columns=TIMINGS)
    b = pd.read_csv(local / "results.csv").drop(columns=TIMINGS)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


FLAKY = """
import sys
import stochopt.study.ray_engine as engine
from stochopt.cli import main


real = engine.train_job


def flaky(job, data, threads, device, *rest):  # sent to the workers by value
    if job.configs[0].batch_size == 256 and job.configs[0].lr == 0.1:
        raise MemoryError("injected failure")  # a known failure: summarised
    return real(job, data, threads, device, *rest)


engine.train_job = flaky
sys.exit(main(sys.argv[1:]))
"""


@needs_ray
def test_a_task_that_raises_fails_its_group_only(cluster, local, tmp_path):
    out = tmp_path / "ray"
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    cmd = cluster.command([sys.executable, str(script), *SWEEP, "--out", str(out),
                           "--engine", "ray", "--ray-address", cluster.address])
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if "injected failure" in line]
    assert len(lines) == 1 and "2 run(s): optimizer momentum, lr 0.1, batch size 256, seed 0/1" \
        in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "MemoryError: injected failure" in (out / "failures.log").read_text()
    table = pd.read_csv(out / "results.csv")
    failed = table[table.status == "failed"]
    assert len(failed) == 2 and set(failed.lr) == {0.1} and set(failed.batch_size) == {256}
    assert failed.epoch.isna().all() and failed.val_acc.isna().all()
    ok = results(out)[table.status != "failed"].reset_index(drop=True)
    reference = results(local)
    reference = reference[~((reference.lr == 0.1) & (reference.batch_size == 256))]
    np.testing.assert_allclose(ok.select_dtypes("number").to_numpy(float),
                               reference.reset_index(drop=True).select_dtypes("number")
                               .to_numpy(float), atol=1e-6)
    assert len(list((out / "runs").glob("*.json"))) == 10  # the failed ones train next time
    assert "2 run(s) failed" in (out / "report.md").read_text()


def test_engine_ray_without_ray_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main([*SWEEP, "--out", str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Ray, which is not installed" in err and 'pip install -e ".[ray]"' in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_ray_flags_need_engine_ray(capsys, tmp_path):
    code = main([*SWEEP, "--out", str(tmp_path / "out"), "--ray-address", "auto"])
    assert code == 2 and "--ray-address applies to --engine ray only" in capsys.readouterr().err


class FakeRay:
    """What check_fits reads of a cluster: its nodes' resources."""

    def __init__(self, *resources: dict[str, float]) -> None:
        self.resources = resources

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self.resources]


def test_each_task_asks_for_its_cpus_and_a_gpu_on_cuda_and_is_retried_only_if_killed():
    from stochopt.study.ray_engine import RayEngine

    cpu, cuda = RayEngine(cpus_per_task=3).options("cpu"), RayEngine().options("cuda")
    assert (cpu["num_cpus"], cpu["num_gpus"], cuda["num_cpus"], cuda["num_gpus"]) == (3, 0, 1, 1)
    # Ray does not retry a task: the driver does, with the group's last checkpoint
    assert cpu["max_retries"] == 0 and cpu["retry_exceptions"] is False
    assert RayEngine().max_retries == 3


def test_a_task_no_node_can_run_is_refused_in_one_line():
    from stochopt.errors import StochoptError
    from stochopt.study.ray_engine import RayEngine

    cluster = FakeRay({"CPU": 1.0}, {"CPU": 1.0})
    RayEngine().check_fits(cluster, RayEngine().options("cpu"))  # fits: no error
    with pytest.raises(StochoptError, match=r"no node of the Ray cluster has 2 CPU\(s\) for a "
                       r"task \(the largest has 1 CPU\(s\), 0 GPU\(s\)\); lower "
                       "--ray-cpus-per-task"):
        RayEngine().check_fits(cluster, RayEngine(cpus_per_task=2).options("cpu"))
    with pytest.raises(StochoptError, match=r"has 1 CPU\(s\) and 1 GPU for a task"):
        RayEngine().check_fits(cluster, RayEngine().options("cuda"))
    RayEngine().check_fits(FakeRay({"CPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}),
                           RayEngine().options("cuda"))


def test_joining_ray_keeps_the_commands_sigterm_handler():
    """ray.init makes SIGTERM a bare sys.exit (what Ray 2.x does in a driver); the engine
    puts the command's handler back, so that SIGTERM ends a Ray study as it ends a local
    one (one line, exit code 143: test_faults' killed compare)."""
    from stochopt.cli import _terminate
    from stochopt.study.ray_engine import RayEngine

    class Joining:
        def init(self, **kwargs):
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        RayEngine().connect(Joining())
        assert signal.getsignal(signal.SIGTERM) is _terminate
    finally:
        signal.signal(signal.SIGTERM, before)


@needs_ray
def test_more_cpus_per_task_than_any_node_has_is_one_line_not_a_hang(cluster, tmp_path):
    code, output = finish(cluster.stochopt([*SWEEP, "--out", str(tmp_path / "out"),
                                            "--ray-cpus-per-task", "2"]), timeout=120)
    lines = [line for line in output.splitlines() if line.startswith("stochopt:")]
    assert code == 2 and len(lines) == 1 and "no node of the Ray cluster has 2 CPU(s)" in lines[0]
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()  # refused before anything was written


@needs_ray
def test_without_an_address_or_a_cluster_a_ray_is_started_for_the_command_and_stopped(
        tmp_path):
    """No --ray-address and no cluster: the command starts Ray (in a loopback-only namespace
    of its own here), trains on it, and leaves no Ray process behind."""
    if why := can_make_namespace():
        pytest.fail(f"the Ray tests need a loopback-only network namespace (as root): {why}")
    args = ["sweep", "--dataset", "digits", "--lrs", "0.01,0.1", "--seeds", "0,1", "--epochs",
            "2", "--optimum", "skip", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # no cluster's address file
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -m stochopt "$@"',
             sys.executable, *args, "--out", str(tmp_path / "ray"), "--engine", "ray"],
            env={**env, "RAY_TMPDIR": str(ray_tmp)}, capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and str(ray_tmp).encode() in _cmdline(p)]
        assert not left, "Ray processes outlived the command"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    tasks = pd.read_csv(tmp_path / "ray" / "tasks.csv")
    assert list(tasks.engine) == ["ray"] and list(tasks.status) == ["trained"]
    assert_same_results(tmp_path / "ray", tmp_path / "local", rows=8)


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@needs_ray
def test_an_address_nothing_answers_at_is_one_line_not_a_hang(cluster, tmp_path):
    done = subprocess.run(cluster.command([
        sys.executable, "-m", "stochopt", *SWEEP, "--out", str(tmp_path / "out"),
        "--engine", "ray", "--ray-address", "127.0.0.1:1"]),
        env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no Ray cluster answers at --ray-address 127.0.0.1:1 (Connection refused)" \
        in done.stderr
    assert not (tmp_path / "out").exists()


@needs_ray
def test_the_loopback_cluster_command_runs_one_command_in_a_cluster_and_stops_it(tmp_path):
    """``python benchmarks/loopback_cluster.py --nodes 2 -- CMD`` (the leaderboard's documented
    form): CMD runs in a network namespace that is not this one, RAY_ADDRESS names a cluster
    of two CPUs, CMD's exit status is the command's, and nothing of the cluster is left."""
    probe = ("import os, ray; ray.init(logging_level='ERROR'); "
             "print(os.readlink('/proc/self/ns/net'), os.environ['RAY_ADDRESS'], "
             "ray.cluster_resources()['CPU']); ray.shutdown(); raise SystemExit(3)")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks"
                             / "loopback_cluster.py"), "--nodes", "2", "--",
         sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    ns, address, cpus = done.stdout.split()[-3:]
    assert ns != os.readlink("/proc/self/ns/net") and address == "127.0.0.1:6379"
    assert float(cpus) == 2.0
    left = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") == ns:
                left.append(entry.name)
        except OSError:
            continue
    assert not left
