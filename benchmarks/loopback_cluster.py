"""A Ray cluster of one or more single-CPU nodes on this machine, inside a network
namespace of its own that has only loopback, for the tests and the benchmark.

Ray finds its node's address by probing an outside address; in a namespace with only
loopback (``unshare -n``, then ``ip link set lo up``; as root) it can reach nothing and uses
127.0.0.1, so nothing a test cluster does leaves this machine. Commands join the namespace
with ``nsenter``; the cluster is stopped by killing every process of the namespace.

    cluster = LoopbackCluster(nodes=2)
    subprocess.run(cluster.command(["stochopt", "sweep", "--engine", "ray",
                                    "--ray-address", cluster.address]), env=cluster.env)
    cluster.stop()

As a command, it runs one command in such a cluster (``RAY_ADDRESS`` names it) and stops
the cluster when that command ends, with its exit status (the leaderboard so):

    python benchmarks/loopback_cluster.py --nodes 2 -- python benchmarks/leaderboard.py --engine ray
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT = 6379  # the namespace's own loopback: no other process can hold it


def namespace_of(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


class LoopbackCluster:
    """``nodes`` Ray nodes of ``cpus`` CPUs each (``ray start``: a head, then the others
    joining it at 127.0.0.1) in a loopback-only namespace; ``start_seconds`` is how long
    starting them took."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        # short: Ray's socket paths must fit in 107 characters
        self.tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(self.tmp),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
            stdout=subprocess.PIPE, text=True)
        if self.holder.stdout is None or self.holder.stdout.readline() != "up\n":
            raise RuntimeError("could not make a loopback-only network namespace (unshare -n)")
        self.ns = namespace_of(self.holder.pid)
        if self.ns == namespace_of("self"):  # never start Ray on the machine's own network
            raise RuntimeError("the namespace is this process's own")
        ray = str(Path(sys.executable).parent / "ray")
        common = ["--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1",
                  "--disable-usage-stats"]
        t0 = time.perf_counter()
        try:
            self.check([ray, "start", "--head", "--port", str(PORT), *common])
            for _ in range(nodes - 1):
                self.check([ray, "start", "--address", f"127.0.0.1:{PORT}", *common])
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        self.address = f"127.0.0.1:{PORT}"

    def command(self, args: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", *args]

    def check(self, args: list[str]) -> None:
        done = subprocess.run(self.command(args), env=self.env, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {done.stderr[-2000:]}")

    def stochopt(self, args: list[str], **kw) -> subprocess.Popen:
        """A driver process in the namespace (its pid is stochopt's: nsenter execs)."""
        return subprocess.Popen(self.command([sys.executable, "-m", "stochopt", *args,
                                              "--engine", "ray", "--ray-address",
                                              self.address]),
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)

    def processes(self) -> list[int]:
        """Every process in the cluster's namespace (the holder's own included)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if namespace_of(entry.name) == self.ns:
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone meanwhile
        return found

    def workers(self, title: str = "ray::train_job") -> list[int]:
        """The worker processes running a task now (Ray titles them by the function)."""
        busy = []
        for pid in self.processes():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                    busy.append(pid)
            except OSError:
                continue
        return busy

    def stop(self) -> None:
        """Kill the cluster: every process of its namespace, by id (a test cluster holds
        nothing worth a graceful shutdown)."""
        deadline = time.time() + 20
        while (alive := self.processes()) and time.time() < deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.holder.poll()  # reap the holder, our child
            time.sleep(0.05)
        self.holder.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def can_make_namespace() -> str | None:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter (util-linux) are not installed"
    done = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -n failed: {done.stderr.strip()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run COMMAND in a Ray cluster of single-CPU nodes "
                                "on this machine, in a network namespace with only loopback "
                                "(as root); RAY_ADDRESS names the cluster.")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus", type=int, default=1, help="CPUs of each node")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command: give one after --")
    if args.nodes < 1 or args.cpus < 1:
        p.error("--nodes and --cpus must be at least 1")
    if (why := can_make_namespace()) is not None:
        p.exit(2, f"loopback_cluster: {why}\n")
    try:
        cluster = LoopbackCluster(nodes=args.nodes, cpus=args.cpus)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        p.exit(2, f"loopback_cluster: {str(e).splitlines()[0]}\n")
    # a kill of this process stops the cluster too (the command is in its namespace)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        done = subprocess.run(cluster.command(command),
                              env={**cluster.env, "RAY_ADDRESS": cluster.address})
        return done.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
