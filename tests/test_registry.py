"""One declaration per optimiser: a rule registered at test time shows up in --help, has its
bad values refused, trains K-at-once beside another rule, and lands in results.csv; the
defaults every rule declares (schedule, lr) are what runs; the docs' table is the
registry's."""

import csv
import math
from pathlib import Path

import pytest
import torch

from stochopt.cli import main
from stochopt.config import Config
from stochopt.errors import SettingError
from stochopt.optim import RULES, Rule, markdown_table, register
from stochopt.optim.base import add_
from stochopt.settings import POSITIVE, Interval, Setting
from stochopt.train import fit

REPO = Path(__file__).resolve().parents[1]


class ToySignSGD(Rule):
    """sign-SGD (Bernstein et al. 2018):  ``w <- w - lr scale sign(g)``."""

    name = "toy-signsgd"
    lr = Setting(1e-3, POSITIVE, "base learning rate")
    scale = Setting(1.0, Interval(0, 10, low_open=True), "multiplies the sign")

    def update(self, w, g, state, lr):
        add_(w, -lr * self.scale, torch.sign(g))


@pytest.fixture
def toy():
    register(ToySignSGD)
    yield ToySignSGD
    del RULES[ToySignSGD.name]


def test_a_registered_rule_appears_in_help(toy, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "toy-signsgd" in text and "--scale" in text and "multiplies the sign" in text


@pytest.mark.parametrize("value", ["0", "11", "-1"])
def test_its_bad_values_are_refused_by_its_declaration(toy, tmp_path, data_dir, capsys, value):
    code = main(["train", "--optimizer", "toy-signsgd", "--scale", value, "--quiet",
                 "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--scale must be in (0, 10], got {float(value)}" in err
    assert not (tmp_path / "o").exists()


def test_it_trains_k_at_once_beside_another_rule_as_alone(toy, split):
    configs = [Config(optimizer="toy-signsgd", lr=1e-3, hyper={"scale": 0.5}),
               Config(optimizer="momentum"),
               Config(optimizer="toy-signsgd", lr=3e-3, seed=1),
               Config(optimizer="momentum", seed=1),
               Config(optimizer="toy-signsgd", lr=1e-3, hyper={"scale": 0.5}, seed=1),
               Config(optimizer="toy-signsgd", lr=3e-3)]
    for c in configs:
        c.epochs, c.batch_size = 1, 1000
    together = fit(configs, split)
    for c, r in zip(configs, together, strict=True):
        (alone,) = fit(c, split)
        assert abs(r.weights - alone.weights).max() <= 1e-5
        assert r.rows[0]["val_loss"] == pytest.approx(alone.rows[0]["val_loss"], abs=1e-5)
    # the declared scale acted: half the step of the same run at scale 1
    (full,) = fit(Config(optimizer="toy-signsgd", lr=1e-3, epochs=1, batch_size=1000), split)
    (half,) = fit(Config(optimizer="toy-signsgd", lr=2e-3, epochs=1, batch_size=1000,
                         hyper={"scale": 0.5}), split)
    assert abs(full.weights - half.weights).max() <= 1e-6


def test_its_hyperparameters_land_in_results_csv(toy, tmp_path, data_dir, capsys):
    out = tmp_path / "c"
    code = main(["compare", "--optimizers", "toy-signsgd,adam", "--scale", "0.5,2",
                 "--batch-size", "4000", "--seeds", "0", "--epochs", "1", "--quiet",
                 "--optimum", "skip",
                 "--data-dir", str(data_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: --scale applies to toy-signsgd only, not to adam" in err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["optimizer"], r["scale"]) for r in rows) == [
        ("adam", ""), ("toy-signsgd", "0.5"), ("toy-signsgd", "2.0")]
    assert {r["schedule"] for r in rows if r["optimizer"] == "toy-signsgd"} == {"exponential"}


def test_library_errors_name_the_setting_and_the_cli_names_the_flag():
    with pytest.raises(SettingError) as e:
        Config(batch_size=0).validate()
    assert str(e.value) == "batch_size must be at least 1, got 0"
    assert e.value.flags() == "--batch-size must be at least 1, got 0"
    with pytest.raises(SettingError, match=r"^beta2 must be in \[0, 1\), got 1.5$"):
        Config(optimizer="adam", hyper={"beta2": 1.5}).validate()


def test_the_exercises_cells_declare_their_schedules():
    """Its momentum cells decay eta x0.9 per epoch; its Adam cell keeps eta fixed."""
    assert {n: RULES[n].default_schedule for n in ("momentum", "nesterov", "adam")} == {
        "momentum": "exponential", "nesterov": "exponential", "adam": "constant"}


@pytest.mark.parametrize("name", sorted(set(RULES) - {"toy-signsgd"}))
def test_each_optimizer_runs_its_declared_default_schedule(name):
    """What runs is what the rule declares: the exercise's x0.9 per epoch for those that
    declare "exponential" (its momentum cells), a fixed eta for "constant" (its Adam cell)."""
    declared = RULES[name].default_schedule
    c = Config(optimizer=name).resolved()
    assert c.schedule == declared
    if declared == "constant":
        assert c.lr_decay is None and Config(optimizer=name).lr_at(9) == c.lr
    else:
        assert declared == "exponential" and c.lr_decay == 0.9
        assert Config(optimizer=name).lr_at(9) == pytest.approx(c.lr * 0.9**9)
    overridden = Config(optimizer=name, schedule="cosine").resolved()
    assert (overridden.schedule, overridden.lr_decay) == ("cosine", 0.0)


def test_compare_records_the_schedule_that_ran(tmp_path, data_dir):
    out = tmp_path / "c"
    assert main(["compare", "--optimizers", "momentum,adam", "--batch-size", "4000",
                 "--seeds", "0", "--epochs", "2", "--quiet", "--optimum", "skip",
                 "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    adam = [r for r in rows if r["optimizer"] == "adam"]
    momentum = [r for r in rows if r["optimizer"] == "momentum"]
    assert {(r["schedule"], r["lr_decay"]) for r in adam} == {("constant", "")}
    assert [float(r["epoch_lr"]) for r in adam] == [1e-3, 1e-3]
    assert {(r["schedule"], r["lr_decay"]) for r in momentum} == {("exponential", "0.9")}
    assert [float(r["epoch_lr"]) for r in momentum] == pytest.approx([0.1, 0.09])
    # the two schedules trained as one batch: one wall-clock interval per epoch
    assert len({(r["epoch"], r["batch_seconds"]) for r in rows}) == 2


def test_the_docs_table_of_optimizers_is_the_registry():
    page = (REPO / "docs" / "optimisers.md").read_text()
    assert markdown_table() in page, "regenerate with: python -m stochopt.optim"


def test_every_setting_has_help_and_a_default_inside_its_range():
    for rule in RULES.values():
        for name, s in rule.settings().items():
            assert s.help, (rule.name, name)
            s.check(s.default)
            assert not (isinstance(s.default, float) and math.isnan(s.default))
