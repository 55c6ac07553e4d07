"""What the benchmark scripts that time training share: their flags (--rounds, --tiny,
--out), the data they time on (MNIST, a tenth of it with --tiny, for the test suite), a
steady epoch's seconds and how they write their results."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from stochopt import load_split
from stochopt.data import Split


def args_and_split(doc: str) -> tuple[argparse.Namespace, Split]:
    """The parsed flags (``doc``: the script's docstring, its first paragraph the help) and
    the split; ``--tiny`` also means one round."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tenth of the data, 1 round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    split = load_split()
    if args.tiny:
        split = tiny_split(split)
        args.rounds = 1
    return args, split


def tiny_split(split: Split, part: int = 10, held: int = 500) -> Split:
    """The first 1/``part`` of the training examples and ``held`` validation and test
    examples: what --tiny times, in seconds, for the test suite."""
    n = len(split.X_train) // part
    return Split(split.X_train[:n], split.y_train[:n], split.X_val[:held], split.y_val[:held],
                 split.X_test[:held], split.y_test[:held])


def steady_epoch_seconds(split: Split, configs: list) -> float:
    """Seconds of a steady epoch of ``configs`` trained as one batch: the second of a
    two-epoch run (the first also allocates the run's buffers); setting up and validation
    are not in it."""
    from stochopt.train import fit

    for c in configs:
        c.epochs = 2
    return fit(configs, split)[0].rows[-1]["batch_seconds"]


def machine() -> dict[str, object]:
    """What the timings ran on. The ratios depend on it: on one 2-core machine (Intel) a
    jitted JAX loop beat one stochopt run at batch 32, on another (AMD EPYC) it did not."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "MKL" if torch.backends.mkl.is_available() else "other"
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "blas": blas, "torch": torch.__version__, "python": platform.python_version()}


def write_results(out: str | Path, name: str, rows: list[dict], **extra: object) -> None:
    """``name``.csv (the rows, their keys as columns) and ``name``.json (the rows,
    ``extra`` and :func:`machine`) in the folder ``out``."""
    from stochopt.files import write_csv, write_json

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / f"{name}.csv", rows, list(rows[0]))
    write_json(folder / f"{name}.json", {"rows": rows, **extra, "machine": machine()})
