"""Seeds in one batch: the wall time of ``stochopt compare --seeds 0,1,2,3,4`` against
``stochopt compare --seeds 0``, each a fresh process and a fresh output folder, alternated,
the median of --repeats runs of each. Target: the ratio at most 1.8x (2.8x when every seed
was its own batch).

    python benchmarks/bench_seeds.py [--repeats 3] [--out benchmarks/results] [--tiny]

Nothing here is a test: timings vary with the machine's load; compare the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stochopt.files import write_csv, write_json

SEEDS = {"--seeds 0": "0", "--seeds 0,1,2,3,4": "0,1,2,3,4"}


def wall(seeds: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stochopt", "compare", "--quiet", "--optimum",
                        "skip", "--seeds", seeds, "--out", out, *extra], check=True)
        return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tiny", action="store_true", help="1 epoch at batch 4000, one repeat")
    args = p.parse_args()
    extra = ["--epochs", "1", "--batch-size", "4000"] if args.tiny else []
    repeats = 1 if args.tiny else args.repeats
    times: dict[str, list[float]] = {name: [] for name in SEEDS}
    for _ in range(repeats):
        for name, seeds in SEEDS.items():
            times[name].append(wall(seeds, extra))
    rows = [{"what": f"stochopt compare {name}", "seconds": statistics.median(t),
             "all": " ".join(f"{x:.2f}" for x in t)} for name, t in times.items()]
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    for r in rows:
        print(f"{r['what']:<40} {r['seconds']:8.2f} s   ({r['all']})")
    print(f"{'five seeds / one seed (target <= 1.8x)':<40} {ratio:8.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench_seeds.csv", rows, ["what", "seconds", "all"])
    write_json(out / "bench_seeds.json", {"rows": rows, "ratio": ratio, "tiny": args.tiny})
    return 0


if __name__ == "__main__":
    sys.exit(main())
