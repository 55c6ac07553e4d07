"""What the benchmark scripts that time training share: their flags (--rounds, --tiny,
--out) and the data they time on (MNIST, a tenth of it with --tiny, for the test suite)."""

from __future__ import annotations

import argparse
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
        n = len(split.X_train) // 10
        split = Split(split.X_train[:n], split.y_train[:n], split.X_val[:500],
                      split.y_val[:500], split.X_test[:500], split.y_test[:500])
        args.rounds = 1
    return args, split


def write_results(out: str | Path, name: str, rows: list[dict], **extra: object) -> None:
    """``name``.csv (the rows, their keys as columns) and ``name``.json (the rows and
    ``extra``) in the folder ``out``."""
    from stochopt.files import write_csv, write_json

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / f"{name}.csv", rows, list(rows[0]))
    write_json(folder / f"{name}.json", {"rows": rows, **extra})
