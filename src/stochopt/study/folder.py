"""The output folder of a study: its fingerprint, and the stored runs.

A study's folder holds ``runs/<run>.json`` (+ ``.npy``) for every finished run, each written
atomically, the JSON last: a run is finished exactly when its JSON exists. Its
``fingerprint.json`` records what the numbers depend on besides the configurations (the data,
the split, dtype, device type, the version of the numerical code); a command whose
fingerprint differs is refused before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config, RunRecord
from ..data import Split
from ..errors import StochoptError
from ..files import lock_out, prepare_out, write_json

# Bump whenever a change alters the numbers a run gives (the order of float operations
# included): an output folder made by another version is then refused, not mixed.
NUMERICS_VERSION = 5


def fingerprint(split: Split, device: str | None = None) -> dict[str, Any]:
    """Everything besides the configuration that a run's numbers depend on; ``device``: the
    type of device the runs train on, when not the split's (a cluster's GPUs)."""
    X = split.X_train
    return {**split.source, "n_features": split.n_features,
            "dtype": str(X.dtype).removeprefix("torch."), "device": device or X.device.type,
            "numerics": NUMERICS_VERSION}


WHAT = {"md5": "data (checksums of the data files)", "numerics": "version of stochopt's "
        "numerical code", "val_fraction": "validation fraction", "split_seed": "split seed"}


def plugins(configs: Sequence[Config]) -> dict[str, str]:
    """Each plug-in optimiser's identity (package and version, or its file's sha256)."""
    return {c.optimizer: c.rule.source for c in configs if c.rule.plugin}


def open_out(out: str | Path, split: Split, device: str | None = None,
             configs: Sequence[Config] = ()) -> Path:
    """Create and lock ``out`` and check its fingerprint against ``split``'s (writing it
    when the folder has none); refuse, before writing anything, a folder whose runs were
    made with other data, split, dtype, device type or numerical code."""
    out = prepare_out(out)
    lock_out(out)
    path, mine = out / "fingerprint.json", fingerprint(split, device)
    used = plugins(configs)
    if path.is_file():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            raise StochoptError(f"{path} is damaged; use another output folder") from None
        stored = theirs.pop("plugins", {})
        changed = [f"{o} ({stored[o]} there, {v} now)" for o, v in used.items()
                   if o in stored and stored[o] != v]
        if changed:
            raise StochoptError(f"{out} holds runs made with another version of "
                                f"{', '.join(changed)}; resuming would mix them: use another "
                                "output folder")
        if any(o not in stored for o in used):  # a new plug-in: remembered from now on
            write_json(path, {**theirs, "plugins": {**stored, **used}})
        differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if differ:
            what = ", ".join(WHAT.get(k, k) + ("" if k == "md5" else
                                               f" ({theirs.get(k)} there, {mine.get(k)} now)")
                             for k in differ)
            raise StochoptError(f"{out} holds runs made with another {what}; resuming would "
                                "mix them: use another output folder")
    elif any((out / "runs").glob("*.json")):
        raise StochoptError(f"{out} holds runs without a fingerprint.json (made by an older "
                            "stochopt); use another output folder")
    else:
        write_json(path, {**mine, **({"plugins": used} if used else {})})
    return out


def load_run(path: Path) -> RunRecord | None:
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: trained again
