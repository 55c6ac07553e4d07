"""Someone else's optimiser, plugged in as MODULE:NAME: equal to a plain torch loop with the
same class (autograd, the same mini-batches) over 30 MNIST steps, one instance per model in a
batch, its hyperparameters read off its signature, its identity in the run id and the
folder's fingerprint, and every way it can fail ending in one line."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
import torch.nn.functional as F

from stochopt import Config, fit
from stochopt.cli import main
from stochopt.data import Split, epoch_order

po = pytest.importorskip("pytorch_optimizer")
adopt = pytest.importorskip("adopt")

B, STEPS = 64, 30


def _small(split: Split, dtype: torch.dtype) -> Split:
    """30 mini-batches of 64 real MNIST training images: one epoch is 30 steps."""
    n = B * STEPS
    return Split(split.X_train[:n].to(dtype), split.y_train[:n], split.X_val[:200].to(dtype),
                 split.y_val[:200], split.X_test[:200].to(dtype), split.y_test[:200])


def _plain_loop(cls, small: Split, lr: float, seed: int, closure: bool, **kwargs):
    """What a user writes: W (784, 10) a leaf, autograd's gradient, opt.step(); for a
    Hessian optimiser ``loss.backward(create_graph=True)``, for a Muon-style one the matrix
    flagged in its param group."""
    W = torch.zeros(784, 10, dtype=small.X_train.dtype, requires_grad=True)
    groups = [{"params": [W], "use_muon": True}] if kwargs.pop("use_muon", False) else [W]
    graph = kwargs.pop("create_graph", False)
    opt = cls(groups, lr=lr, **kwargs)
    torch.manual_seed(seed)  # Hutchinson's probes: the harness seeds them with the run's seed
    for idx in epoch_order(len(small.X_train), seed, 0, "cpu").split(B):
        opt.zero_grad()
        loss = F.cross_entropy(small.X_train[idx] @ W, small.y_train[idx])
        loss.backward(create_graph=graph)
        opt.step((lambda loss=loss: loss.detach()) if closure else None)
    if hasattr(opt, "eval"):  # schedule-free: answer at the averaged point
        opt.eval()
    return W.detach()


# (MODULE:NAME, the class, lr, our hyperparameters, the class's kwargs, needs a closure)
CASES = [
    ("torch.optim:NAdam", torch.optim.NAdam, 2e-3, {}, {}, False),
    ("torch.optim:SGD", torch.optim.SGD, 0.1, {"momentum": 0.9, "nesterov": True},
     {"momentum": 0.9, "nesterov": True}, False),
    ("pytorch_optimizer:Lamb", po.Lamb, 1e-2, {}, {}, False),  # a global norm: trust ratio
    ("pytorch_optimizer:AliG", po.AliG, 0.1, {"max_lr": 0.1}, {"max_lr": 0.1}, True),
    ("pytorch_optimizer:ScheduleFreeAdamW", po.ScheduleFreeAdamW, 2.5e-3, {}, {}, False),
    ("pytorch_optimizer:SOAP", po.SOAP, 3e-3, {"precondition_frequency": 5},
     {"precondition_frequency": 5}, False),
    ("pytorch_optimizer:AdaBelief", po.AdaBelief, 1e-3, {"opt_weight_decay": 1e-2},
     {"weight_decay": 1e-2}, False),
    ("adopt:ADOPT", adopt.ADOPT, 1e-3, {"betas": (0.8, 0.99)}, {"betas": (0.8, 0.99)}, False),
    # Hessian-vector products: the gradient handed over with autograd's graph
    ("pytorch_optimizer:AdaHessian", po.AdaHessian, 1e-3, {}, {"create_graph": True}, False),
    # a param-group flag: the matrix goes to Newton-Schulz
    ("pytorch_optimizer:Muon", po.Muon, 0.02, {}, {"use_muon": True}, False),
    # a required argument the harness knows: the run's total steps
    ("pytorch_optimizer:Ranger21", po.Ranger21, 1e-3, {}, {"num_iterations": STEPS}, False),
]
# SOAP's eigendecompositions carry float64's last digits (analytic against autograd's
# gradient) into 1e-11 differences of the weights. In float32 they turn the gradients' last
# digits into 0.05 of the weights within 30 steps (two plain loops, one with autograd's
# gradient and one with the analytic one, differ as much): no float32 comparison can hold.
FLOAT64_TOL = {"pytorch_optimizer:SOAP": 1e-10}
# Muon's Newton-Schulz runs in bfloat16: float32's last digits flip its roundings (as for
# stochopt's own muon, whose batch test runs in float64 for the same reason)
CHAOTIC_IN_FLOAT32 = {"pytorch_optimizer:SOAP", "pytorch_optimizer:Muon"}
PARAMS = [(*case, dtype) for case in CASES for dtype in (torch.float32, torch.float64)
          if not (dtype == torch.float32 and case[0] in CHAOTIC_IN_FLOAT32)]


@pytest.mark.parametrize(("spec", "cls", "lr", "ours", "theirs", "closure", "dtype"), PARAMS,
                         ids=[f"{p[0]}-{str(p[-1])[6:]}" for p in PARAMS])
def test_a_plugin_matches_a_plain_torch_loop(split, spec, cls, lr, ours, theirs, closure,
                                             dtype):
    small = _small(split, dtype)
    carry: dict = {}
    (record,) = fit(Config(spec, lr=lr, epochs=1, batch_size=B, schedule="constant",
                           seed=3, hyper=ours), small, carry=carry)
    reference = _plain_loop(cls, small, lr, 3, closure, **theirs)
    tol = 1e-6 if dtype == torch.float32 else FLOAT64_TOL.get(spec, 1e-12)
    assert record.status == "ok" and reference.abs().max() > 1e-3
    assert (carry["W"][0] - reference).abs().max().item() <= tol


def test_lamb_at_two_lrs_and_two_seeds_in_one_batch_equals_each_run_alone(split):
    """Each model its own instance: Lamb's trust ratio (a norm over the whole parameter)
    never mixes the models of a batch."""
    small = _small(split, torch.float64)
    configs = [Config("pytorch_optimizer:Lamb", lr=lr, seed=s, epochs=1, batch_size=B,
                      schedule="constant") for lr in (1e-2, 3e-2) for s in (0, 1)]
    carry: dict = {}
    fit(configs, small, carry=carry)  # one batch of K = 4 (2 seeds x 2 lrs)
    together = carry["W"]
    order = [(s, lr) for s in (0, 1) for lr in (1e-2, 3e-2)]  # the batch's seed-major order
    for k, (s, lr) in enumerate(order):
        alone: dict = {}
        fit(Config("pytorch_optimizer:Lamb", lr=lr, seed=s, epochs=1, batch_size=B,
                   schedule="constant"), small, carry=alone)
        assert (together[k] - alone["W"][0]).abs().max().item() <= 1e-12
    assert (together[0] - together[1]).abs().max().item() > 1e-3  # the lrs differ


def test_hyperparameters_come_from_the_signature_and_are_checked(capsys, tmp_path):
    argv = ["train", "--optimizer", "torch.optim:NAdam", "--out", str(tmp_path / "o"),
            "--dataset", "digits", "--epochs", "1", "--quiet"]
    assert main([*argv, "--hp", "betas=0.9"]) == 2
    err = capsys.readouterr().err
    assert "betas must be a tuple of 2 values" in err and err.count("\n") == 1
    assert main([*argv, "--hp", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a hyperparameter" in err and "momentum_decay" in err
    assert main([*argv, "--hp", "betas=(0.8,0.99)", "--hp", "momentum_decay=0.01"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["config"]["hyper"]["betas"] == [0.8, 0.99]
    assert summary["config"]["hyper"]["momentum_decay"] == 0.01
    assert summary["config"]["lr"] == 2e-3  # NAdam's own default without --lr


@pytest.mark.parametrize(("spec", "message"), [
    ("nomodule:X", "cannot import 'nomodule'"),
    ("torch.optim:Nope", "torch.optim has no 'Nope'"),
    ("./missing.py:Opt", "optimizer file ./missing.py not found"),
    ("torch:float32", "not an optimizer class or factory"),
])
def test_a_plugin_that_cannot_run_is_one_line(tmp_path, capsys, spec, message):
    assert main(["train", "--optimizer", spec, "--dataset", "digits", "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


FILE_PLUGIN = '''
import torch


class Halving(torch.optim.SGD):
    """SGD whose step is scaled by {scale}."""

    def __init__(self, params, lr=0.1, scale={scale}):
        super().__init__(params, lr=lr * scale)
'''


def test_a_file_plugin_edit_and_a_version_change_are_refused_by_the_fingerprint(tmp_path,
                                                                               capsys):
    mine = tmp_path / "mine.py"
    mine.write_text(FILE_PLUGIN.format(scale=0.5))
    out = tmp_path / "out"
    argv = ["compare", "--optimizers", f"momentum,{mine}:Halving", "--epochs", "1",
            "--batch-size", "500", "--seeds", "0", "--dataset", "digits", "--out", str(out),
            "--quiet", "--optimum", "skip"]
    assert main(argv) == 0
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["plugins"][f"{mine}:Halving"].startswith("sha256:")
    rows = (out / "results.csv").read_text()
    assert "sha256:" in rows.splitlines()[2]  # the source column names the code
    mine.write_text(FILE_PLUGIN.format(scale=0.25))  # the file is edited: another optimizer
    from stochopt.optim.plugin import plugin_rule
    plugin_rule.cache_clear()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another version of" in err and "Halving" in err
    # a package's version is kept the same way: another version there is refused
    fingerprint["plugins"] = {"torch.optim:NAdam": "torch 0.0.1"}
    (out / "fingerprint.json").write_text(json.dumps(fingerprint))
    argv[2] = "torch.optim:NAdam"
    assert main(argv) == 2 and "torch 0.0.1 there" in capsys.readouterr().err


def test_an_optimizers_own_decay_leaves_the_suboptimality_column_empty(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--optimizers", "torch.optim:SGD,pytorch_optimizer:Lamb", "--hp",
                 "weight_decay=0,0.01", "--epochs", "1", "--batch-size", "500", "--seeds",
                 "0", "--dataset", "digits", "--weight-decay", "1e-3", "--optimum", "solve",
                 "--out", str(out), "--quiet"]) == 0
    import csv

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    measured = {(r["optimizer"], float(r["opt_weight_decay"])): r["suboptimality"]
                for r in rows}
    assert measured[("torch.optim:SGD", 0.0)] != ""  # only the objective's L2: f* applies
    assert measured[("torch.optim:SGD", 0.01)] == ""  # its own decay: another objective
    assert measured[("pytorch_optimizer:Lamb", 0.01)] == ""


def test_the_zoo_of_pytorch_optimizer_lists_every_export_with_a_status(tmp_path, capsys):
    """Every optimizer the package exports (its own list, not ours) has a row; those that
    cannot run say why; one that raises fails alone; at least 120 of 128 train."""
    import csv

    out = tmp_path / "zoo"
    assert main(["zoo", "pytorch_optimizer", "--epochs", "1", "--batch-size", "512",
                 "--seeds", "0", "--dataset", "digits", "--optimum", "skip", "--out", str(out),
                 "--quiet"]) == 0
    with open(out / "zoo.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == po.get_supported_optimizers()
    status = {r["name"]: r["status"] for r in rows}
    assert set(status.values()) <= {"trained", "failed", "unsupported"}
    assert sum(s == "trained" for s in status.values()) >= 120
    assert all(r["reason"] for r in rows if r["status"] != "trained")
    assert status["lomo"] == "unsupported" and "takes a model" in next(
        r["reason"] for r in rows if r["name"] == "lomo")
    trained = [r for r in rows if r["status"] == "trained"]
    version = importlib.metadata.version("pytorch-optimizer")
    assert all(r["source"] == f"pytorch_optimizer {version}" for r in trained)
    assert all(0 <= float(r["final_val_acc_mean"]) <= 100 for r in trained
               if r["n_diverged"] == "0")
    assert "Traceback" not in capsys.readouterr().err


def test_the_zoo_takes_no_optimizer_flag(capsys):
    """Its optimisers come from its module: --optimizer would be ignored, so it is refused."""
    assert main(["zoo", "stochopt", "--optimizer", "adam", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --optimizer" in err and err.count("\n") == 1


def test_an_optimizer_whose_own_decay_defaults_to_nonzero_has_no_suboptimality():
    """SOAP's weight_decay defaults to 0.01: left as it is, its runs minimise another
    objective than the one f* is certified for."""
    assert Config("pytorch_optimizer:SOAP").decoupled_decay
    assert not Config("pytorch_optimizer:SOAP", hyper={"opt_weight_decay": 0.0}).decoupled_decay
    assert not Config("torch.optim:NAdam").decoupled_decay  # its default decay is 0


def test_with_a_bias_the_plugin_sees_w_and_b_as_two_parameters(split):
    """With --bias the model is W (784, 10) and b (10,), as nn.Linear's: Lamb's trust ratio is
    taken per parameter, so handing it one (785, 10) matrix would give other numbers."""
    small = _small(split, torch.float64)

    def with_ones(X):
        return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)

    biased = Split(with_ones(small.X_train), small.y_train, with_ones(small.X_val),
                   small.y_val, with_ones(small.X_test), small.y_test, source={"bias": True})
    carry: dict = {}
    fit(Config("pytorch_optimizer:Lamb", lr=1e-2, epochs=1, batch_size=B, seed=3,
               schedule="constant"), biased, carry=carry)
    W = torch.zeros(784, 10, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    opt = po.Lamb([W, b], lr=1e-2)
    for idx in epoch_order(len(small.X_train), 3, 0, "cpu").split(B):
        opt.zero_grad()
        F.cross_entropy(small.X_train[idx] @ W + b, small.y_train[idx]).backward()
        opt.step()
    ours = carry["W"][0]
    assert (ours[:784] - W.detach()).abs().max().item() <= 1e-12
    assert (ours[784] - b.detach()).abs().max().item() <= 1e-12
    assert b.detach().abs().max().item() > 1e-4  # the bias moved: the test has teeth
    # as one (785, 10) matrix, Lamb's trust ratio would be another: the split matters
    joined = torch.zeros(785, 10, dtype=torch.float64, requires_grad=True)
    opt = po.Lamb([joined], lr=1e-2)
    for idx in epoch_order(len(small.X_train), 3, 0, "cpu").split(B):
        opt.zero_grad()
        F.cross_entropy(with_ones(small.X_train[idx]) @ joined, small.y_train[idx]).backward()
        opt.step()
    assert (ours - joined.detach()).abs().max().item() > 1e-6


def capped_zoo(tmp_path) -> dict[str, dict[str, str]]:
    """``stochopt zoo torch.optim`` for one epoch of the digits at batch 512 (3 steps) with a
    1 s epoch cap: its zoo.csv rows by name."""
    import csv

    out = tmp_path / "zoo"
    assert main(["zoo", "torch.optim", "--epochs", "1", "--batch-size", "512", "--seeds", "0",
                 "--dataset", "digits", "--optimum", "skip", "--out", str(out), "--quiet",
                 "--max-epoch-seconds", "1"]) in (0, 1)
    with open(out / "zoo.csv") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_the_zoo_lists_an_optimizer_over_the_epoch_cap_with_its_step_time(tmp_path,
                                                                          monkeypatch):
    """--max-epoch-seconds: each optimiser's step is timed first; one whose projected epoch
    is over the cap is listed (unsupported, with its measured step time and why) instead of
    trained, the rest train. The timing is replaced by fixed numbers (Muon's step 1 s, the
    others' 1 ms), so that the decision is checked, not this machine's speed; the real
    timing is checked to be a positive number of seconds."""
    import math

    from stochopt.data import load_split
    from stochopt.study import zoo

    split = load_split(dataset="digits")
    assert zoo.step_seconds("torch.optim:SGD", split, 512) > 0
    assert zoo.step_seconds("torch.optim:SGD", split, 512, repeats=2) > 0
    monkeypatch.setattr(zoo, "step_seconds", lambda spec, split, batch, repeats=1:
                        1.0 if spec.endswith(":Muon") else 1e-3)
    per_epoch = math.ceil(len(split.X_train) / 512)  # 3 steps: Muon 3 s, the others 3 ms
    rows = capped_zoo(tmp_path)
    muon = rows["Muon"]
    assert muon["status"] == "unsupported" and float(muon["seconds_per_step"]) == 1.0
    assert f"{per_epoch:g} s per epoch projected" in muon["reason"]
    assert "1e+03 ms per step" in muon["reason"] or "1000 ms per step" in muon["reason"]
    assert rows["SGD"]["status"] == "trained" and float(rows["SGD"]["seconds_per_step"]) == 1e-3
    assert not any("too slow" in r["reason"] for n, r in rows.items() if n != "Muon")


def test_the_zoo_times_an_optimizer_over_the_cap_again_and_keeps_its_fastest_runs(
        tmp_path, monkeypatch):
    """A step timed while the machine is busy looks slower than it is: an optimiser over the
    cap at its first timing is timed again, each run the zoo's REPEATS times (the fastest
    kept), and judged by that: Adam, over the cap at first (1 s) and under it then (1 ms),
    trains; Muon, over it both times, is listed with its second time; SGD, under it at once,
    is timed once. The timings are fixed numbers, as above."""
    from stochopt.study import zoo

    given = {"Adam": [1.0, 1e-3], "Muon": [1.0, 2.0]}
    calls: dict[str, list[int]] = {}

    def timing(spec: str, split, batch: int, repeats: int = 1) -> float:
        name = spec.split(":")[1]
        calls.setdefault(name, []).append(repeats)
        return given[name][len(calls[name]) - 1] if name in given else 1e-3

    monkeypatch.setattr(zoo, "step_seconds", timing)
    rows = capped_zoo(tmp_path)
    assert rows["Adam"]["status"] == "trained" and float(rows["Adam"]["seconds_per_step"]) == 1e-3
    assert rows["Muon"]["status"] == "unsupported"
    assert float(rows["Muon"]["seconds_per_step"]) == 2.0 and "2e+03 ms per step" in \
        rows["Muon"]["reason"]
    assert calls["Adam"] == calls["Muon"] == [1, zoo.REPEATS] and calls["SGD"] == [1]
