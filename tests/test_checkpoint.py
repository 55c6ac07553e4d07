"""Mid-run checkpoints: a batch cut short resumes from its last checkpoint and ends bit for
bit where an uninterrupted run ends, whatever its rules keep in their state (moments,
schedule-free's averages, D-Adaptation's estimate, SAGA's table, a plug-in's own optimiser
objects and its random probes); a real SIGKILL of the command, then the same command."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stochopt import Config, fit
from stochopt.conformance import crop
from stochopt.data import Split
from stochopt.train import Checkpoint


class Killed(Exception):
    pass


def _small(split: Split) -> Split:
    return Split(split.X_train[:3200], split.y_train[:3200], split.X_val[:200],
                 split.y_val[:200], split.X_test[:200], split.y_test[:200])


def _interrupted_then_resumed(configs, data, path: Path, stop_after: int):
    """Train until ``stop_after`` epochs are done (a checkpoint each epoch), raise as a kill
    would end it, then train the same configurations again from the checkpoint."""
    def kill(epoch, records):
        if epoch == stop_after:
            raise Killed

    with pytest.raises(Killed):
        fit(configs, data, on_epoch=kill, checkpoint=Checkpoint(path))
    assert path.is_file()
    resumed = Checkpoint(path)
    carry: dict = {}
    records = fit(configs, data, checkpoint=resumed, carry=carry)
    return records, carry, resumed


CASES = {
    "adaptive rules and a plug-in, two seeds": [
        Config(o, epochs=4, batch_size=64, seed=s, lr=lr, hyper=h)
        for o, lr, h in [("adam", 1e-3, {}), ("sgd-schedulefree", 1.0, {}),
                         ("prodigy", 1.0, {}), ("torch.optim:Adam", 1e-3, {})]
        for s in (0, 1)],
    "saga's table": [Config("saga", epochs=4, batch_size=64, lr=0.05)],
    "a plug-in's random probes": [Config("pytorch_optimizer:AdaHessian", epochs=4,
                                         batch_size=64, lr=1e-3)],
    # per-model factors in lists, each run's probe generator, the shared rebalance draws
    "kron's probes and factors, two seeds": [Config("kron", epochs=4, batch_size=64, seed=s)
                                              for s in (0, 1)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_resumed_batch_ends_bit_for_bit_as_an_uninterrupted_one(case, split, tmp_path):
    if "AdaHessian" in case or "probes" in case:
        pytest.importorskip("pytorch_optimizer")
    configs, data = CASES[case], _small(split)
    if "kron" in case:  # its 784 x 784 factor: the images' centre (196 pixels) and 25 steps
        # an epoch are enough (the rebalance draws come at steps 20 and 125)
        data = Split(*(crop(a, 196) if a.dim() == 2 else a for a in
                       (data.X_train[:1600], data.y_train[:1600], data.X_val, data.y_val,
                        data.X_test, data.y_test)))
    whole: dict = {}
    expected = fit(configs, data, carry=whole)
    records, carry, checkpoint = _interrupted_then_resumed(configs, data,
                                                           tmp_path / "c.pt", 2)
    assert checkpoint.resumed_from == 2
    assert torch.equal(carry["W"], whole["W"])
    for a, b in zip(records, expected, strict=True):
        assert len(a.rows) == 4
        for ra, rb in zip(a.rows, b.rows, strict=True):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "steps"):
                assert ra[key] == rb[key], (case, key)
        assert a.test_acc == b.test_acc and a.status == b.status


def test_a_checkpoint_of_other_runs_or_a_damaged_one_is_not_used(split, tmp_path):
    data = _small(split)
    path = tmp_path / "c.pt"
    _interrupted_then_resumed([Config("adam", epochs=3, batch_size=64)], data, path, 1)
    other = Checkpoint(path)  # the file now holds adam's; momentum starts from scratch
    records = fit([Config("momentum", epochs=3, batch_size=64)], data, checkpoint=other)
    assert other.resumed_from == 0 and len(records[0].rows) == 3
    path.write_bytes(b"not a checkpoint")
    damaged = Checkpoint(path)
    fit([Config("momentum", epochs=3, batch_size=64)], data, checkpoint=damaged)
    assert damaged.resumed_from == 0


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sigkill_mid_run_then_the_same_command_resumes_from_the_checkpoint(tmp_path):
    """stochopt compare, killed (SIGKILL) after its 20th epoch's checkpoint of 40, then run
    again: it resumes at epoch 20 or later (at most half of a restart's training, less than
    60%), and results.csv equals an uninterrupted run's, every digit of every column but
    the timings. scikit-learn's digits at batch 8: epochs short enough to keep the test
    quick, long enough (tens of ms) to be killed in the middle of one."""
    args = ["--optimizers", "momentum,adam", "--seeds", "0,1", "--epochs", "40",
            "--batch-size", "8", "--dataset", "digits", "--optimum", "skip",
            "--checkpoint-every", "1", "--quiet"]
    command = [sys.executable, "-m", "stochopt", "compare", *args]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    from stochopt.cli import main

    assert main(["compare", *args, "--out", str(tmp_path / "whole")]) == 0  # uninterrupted
    out = tmp_path / "killed"
    proc = subprocess.Popen([*command, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((out / "runs").glob("group-*.pt")) if (out / "runs").is_dir() else []
        if found and torch.load(found[0], weights_only=False)["epoch"] >= 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.csv").exists()
    subprocess.run([*command, "--out", str(out)], check=True, env=env, capture_output=True)
    (task,) = _rows(out / "tasks.csv")
    assert 20 <= int(task["resumed_from_epoch"]) < 40  # at most 20 of 40 trained again
    assert int(task["checkpoint_bytes"]) > 0
    timings = {"seconds", "batch_seconds", "elapsed"}
    whole, resumed = _rows(tmp_path / "whole" / "results.csv"), _rows(out / "results.csv")
    assert len(whole) == len(resumed) == 4 * 40
    for a, b in zip(whole, resumed, strict=True):
        assert {k: v for k, v in a.items() if k not in timings} == \
               {k: v for k, v in b.items() if k not in timings}
    assert not list((out / "runs").glob("group-*.pt"))  # removed once its runs are stored


UNSAVABLE = """
import torch


class Unsavable(torch.optim.SGD):
    def state_dict(self):
        return {"f": lambda: 0}  # nothing torch.save can write
"""


def test_a_plugin_whose_state_cannot_be_saved_trains_on_without_checkpoints(split, tmp_path):
    path = tmp_path / "unsavable.py"
    path.write_text(UNSAVABLE)
    config = Config(f"{path}:Unsavable", lr=0.1, epochs=3, batch_size=64)
    checkpoint = Checkpoint(tmp_path / "c.pt")
    with pytest.warns(UserWarning, match="no checkpoints for this group"):
        (record,) = fit(config, _small(split), checkpoint=checkpoint)
    assert record.status == "ok" and len(record.rows) == 3
    assert not checkpoint.path.exists()
