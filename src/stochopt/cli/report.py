"""``stochopt report DIR``: a folder's tables, figures and page, rebuilt from its runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import StochoptError
from ..files import lock_out
from ..study.analysis import Targets
from ..study.artefacts import write_all
from ..study.folder import load_run


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.folder)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        raise StochoptError(f"{out} has no meta.json: give a folder that compare, sweep, "
                            "tune or zoo wrote")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise StochoptError(f"{meta_path} is damaged ({e}); run the command that made "
                            "the folder again") from None
    records = [r for p in sorted((out / "runs").glob("*.json")) if (r := load_run(p))]
    if not records:
        raise StochoptError(f"{out}/runs holds no finished run")
    try:  # the command's own order of its runs, which its tables and labels follow
        order = {row["run"]: i for i, row in enumerate(json.loads(
            (out / "runs.json").read_text()))}
    except (OSError, ValueError, KeyError, TypeError):
        order = {}
    records.sort(key=lambda r: order.get(r.run, len(order)))
    lock_out(out)
    targets = Targets(**meta.get("targets", {}))
    title = meta.get("command", "stochopt")
    write_all(out, records, title, targets=targets, tuned=title.endswith("tune"),
              data=meta.get("data"))
    print(f"{len(records)} run(s) -> {out / 'report.html'}")
    return 0
