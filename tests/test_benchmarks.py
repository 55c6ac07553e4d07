"""Each benchmark script runs end to end on a tiny setting, so it cannot rot, and what it
writes holds together: every ratio is the quotient of the timings it names, each timing the
median of its rounds, and the alternatives it races agree on the answer."""

import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import torch_threads

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    stdout: str


@pytest.fixture
def bench(tmp_path, data_dir, monkeypatch, capsys):
    """``bench(script, *flags)`` runs ``benchmarks/<script> --tiny --out tmp_path`` (``tiny=
    False``: the flags alone) by calling its ``main()`` in this process, as ``python
    benchmarks/<script>`` would (its own folder on the path, its argv): the suite has imported
    torch, scikit-learn, torch.optim's compiler and JAX once, which a fresh interpreter per
    script paid for again (3-8 s each, most of a tiny run). ``bench_cost.py`` runs as a
    command, for the scripts' entry point."""
    monkeypatch.setenv("STOCHOPT_DATA", str(data_dir))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))

    def run(script: str, *flags: str, tiny: bool = True) -> Ran:
        path = REPO / "benchmarks" / script
        argv = ["--tiny", "--out", str(tmp_path)] if tiny else []
        monkeypatch.setattr(sys, "argv", [str(path), *argv, *flags])
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        capsys.readouterr()
        # a script that sets torch's threads or a SIGTERM handler (the leaderboard): the
        # test process gets its own back
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            with torch_threads(torch.get_num_threads()):
                code = module.main()
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        assert code in (0, None)
        return Ran(capsys.readouterr().out)

    return run


def _run(script, tmp_path, data_dir):
    """The script as a command, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "STOCHOPT_DATA": str(data_dir)},
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_bench_epoch_runs_and_writes_its_table(bench, tmp_path):
    proc = bench("bench_epoch.py")
    result = json.loads((tmp_path / "bench_epoch.json").read_text())
    # what it ran on, since the ratios depend on it
    assert result["machine"]["cores"] == os.cpu_count()
    assert result["machine"]["threads"] == torch.get_num_threads()
    assert result["machine"]["cpu"] and result["machine"]["torch"] == torch.__version__
    names = [r["what"] for r in result["rows"]]
    for prefix in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)"):
        assert any(n.startswith(prefix) for n in names), prefix
    seconds = {r["what"]: r["seconds"] for r in result["rows"]}
    rounds = result["rounds"]

    def timing(prefix: str) -> float:
        (value,) = [v for k, v in seconds.items() if k.startswith(prefix)]
        return value

    ratios = result["ratios"]

    def paired(at: str) -> dict:
        """JAX's seconds over ours round by round: their range and the rounds ours won."""
        each = [j / o for j, o in zip(rounds[f"jax {at}"], rounds[f"stochopt {at}"],
                                      strict=True)]
        return {"low": min(each), "high": max(each), "won": sum(e > 1 for e in each),
                "rounds": len(each)}

    # every contender at every batch size, each figure the median of its rounds
    for bs in (64, 512):
        ours = timing(f"(d) stochopt momentum, epoch @{bs}")
        assert ours == pytest.approx(statistics.median(rounds[f"stochopt @{bs}"]))
        assert ratios[f"(b)/(d) torch.optim/stochopt @{bs}"] == pytest.approx(
            timing(f"(b) torch.optim + autograd, epoch @{bs}") / ours)
        jax = timing(f"(d) JAX+optax lax.scan, epoch @{bs}")
        if importlib.util.find_spec("jax") and importlib.util.find_spec("optax"):
            assert jax == pytest.approx(statistics.median(rounds[f"jax @{bs}"]))
            assert ratios[f"(d) JAX/stochopt @{bs}"] == pytest.approx(jax / ours)
            assert result["paired"][f"@{bs}"] == pytest.approx(paired(f"@{bs}"))
            assert f"stochopt faster in {paired(f'@{bs}')['won']} of" in proc.stdout
        else:  # the column is there, empty, and says why
            assert math.isnan(jax) and "pip install -e \".[bench]\"" in proc.stdout
            assert result["paired"] == {}
    for K in (1, 2):
        per = timing(f"(g) stochopt K={K}: per configuration")
        assert per == pytest.approx(statistics.median(rounds[f"stochopt K={K}"]))
        # each round's K runs against that round's floor, the median of those ratios
        assert ratios[f"(g) stochopt/floor K={K}"] == pytest.approx(statistics.median(
            k / f for k, f in zip(rounds[f"stochopt K={K}"], rounds["floor"], strict=True)))
        if result["paired"]:  # JAX's vmap round by round, as its scan above
            assert result["paired"][f"K={K}"] == pytest.approx(paired(f"K={K}"))
    assert timing("(g) compute floor") == pytest.approx(statistics.median(rounds["floor"]))
    assert ratios["(a)/(d) exercise loop vs stochopt @64"] == pytest.approx(
        timing("(a)") / timing("(d) stochopt momentum, epoch @64"))
    assert ratios["(d)/(e) stochopt @64 vs roofline"] == pytest.approx(
        timing("(d) stochopt momentum, epoch @64") / timing("(e)"))
    assert (tmp_path / "bench_epoch.csv").is_file() and "(d)/(e)" in proc.stdout


def test_bench_gpu_runs_on_the_cpu_and_projects_the_study(bench, tmp_path):
    proc = bench("bench_gpu.py", "--device", "cpu")
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    rows = {r["what"]: r for r in result["rows"]}
    for K in (1, 4):
        row = rows[f"(1) stochopt K={K}, epoch @64"]
        assert row["per_model_epoch"] == pytest.approx(row["seconds"] / K)
        assert result["ratios"][f"(2) torch.optim/stochopt per model-epoch, K={K}"] == \
            pytest.approx(rows["(2) torch.optim + autograd, one model, epoch @64"]["seconds"]
                          / row["per_model_epoch"])
    # the study: 2 optimisers x 2 lrs x 2 seeds x 2 batch sizes, projected from its groups
    assert result["study_runs"] == 16 and result["study_rules"] == ["sgd", "momentum"]
    study = next(r for r in result["rows"] if r["what"].startswith("(4) study of 16 runs"))
    timed = float(study["note"].split("timed: ")[1].split(" s")[0])
    assert study["seconds"] == pytest.approx(10 * timed, abs=0.06)
    main_job = rows["(3) main job: stochopt compare, wall"]
    trained = float(main_job["note"].split()[1])
    assert 0 < trained < main_job["seconds"]
    assert "projected study" in proc.stdout


def test_bench_seeds_runs_and_writes_its_ratio(bench, tmp_path):
    proc = bench("bench_seeds.py")
    result = json.loads((tmp_path / "bench_seeds.json").read_text())
    assert [r["what"] for r in result["rows"]] == ["stochopt compare --seeds 0",
                                                   "stochopt compare --seeds 0,1,2,3,4"]
    _medians_and_ratio(result)
    assert "five seeds / one seed" in proc.stdout


def test_bench_optimum_runs_and_writes_its_ratios(bench, tmp_path):
    proc = bench("bench_optimum.py")
    result = json.loads((tmp_path / "bench_optimum.json").read_text())
    assert {r["what"].split(" (")[0] for r in result["rows"]} == {
        "stochopt newton-cg", "stochopt l-bfgs", "scikit-learn LogisticRegression"}
    s = result["summary"]["0.001"]
    rows = {r["what"].split(" (")[0]: r for r in result["rows"] if r["weight_decay"] == 0.001}
    assert s["newton_vs_lbfgs"] == pytest.approx(rows["stochopt l-bfgs"]["seconds"]
                                                 / rows["stochopt newton-cg"]["seconds"])
    # the three solvers reach one optimum; Newton's gap is certified below 1e-12 of f
    assert all(abs(r["f_minus_newton"]) < 1e-6 for r in rows.values())
    assert 0 <= s["certified_gap"] <= 1e-12 * rows["stochopt newton-cg"]["objective"]
    assert "targets >= 5x" in proc.stdout


def test_bench_cv_runs_and_writes_its_ratio(bench, tmp_path):
    proc = bench("bench_cv.py")
    result = json.loads((tmp_path / "bench_cv.json").read_text())
    assert [r["what"] for r in result["rows"]] == ["SoftmaxRegressionCV (grid at once)",
                                                   "GridSearchCV(SoftmaxRegression)"]
    _medians_and_ratio(result)
    once, one_by_one = result["rows"]
    assert once["chosen"] == one_by_one["chosen"]  # the same grid point, however trained
    assert "target >= 4x" in proc.stdout


def test_bench_rules_covers_every_optimizer(bench, tmp_path):
    bench("bench_rules.py")
    result = json.loads((tmp_path / "bench_rules.json").read_text())
    from stochopt.optim import RULES

    assert {r["optimizer"] for r in result["rows"]} == set(RULES) - {"toy-signsgd"}
    assert all(r["status"] == "ok" and 0 < r["val_acc"] <= 100 for r in result["rows"])


def test_bench_plugins_ratios_are_the_medians_quotients(bench, tmp_path):
    proc = bench("bench_plugins.py")
    result = json.loads((tmp_path / "bench_plugins.json").read_text())
    seconds = {r["what"]: r["seconds_per_model_epoch"] for r in result["rows"]}
    for k in (1, 8):
        assert result["ratios"][f"plug-in / native, K={k}"] == pytest.approx(
            seconds[f"torch.optim:Adam K={k}"] / seconds[f"adam K={k}"])
    assert "plug-in / native, K=8" in proc.stdout


def _medians_and_ratio(result) -> None:
    """Each row's seconds is the median of its rounds; the ratio is second over first."""
    for row in result["rows"]:
        rounds = [float(x) for x in row["all"].split()]
        assert f"{row['seconds']:.2f}" == f"{statistics.median(rounds):.2f}"
    first, second = result["rows"]
    assert result["ratio"] == pytest.approx(second["seconds"] / first["seconds"])


def test_bench_cost_splits_a_mixed_batch_and_its_ratios_are_quotients(tmp_path, data_dir):
    proc = _run("bench_cost.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_cost.json").read_text())
    assert [r["optimizer"] for r in result["rows"]] == ["sgd", "muon"]
    for r in result["rows"]:
        assert r["ratio"] == pytest.approx(r["together"] / r["alone"])
    assert all(x == pytest.approx(1.0, rel=1e-9) for x in result["sum_over_wall"])
    assert "muon  in a batch with the other" in proc.stdout


def test_leaderboard_ranks_two_tuned_optimizers_with_paired_verdicts(bench, tmp_path):
    """The leaderboard on a tiny budget (two optimisers, one epoch, the digits; its last
    stage's two compare commands at once, each in its own process): one row each with the
    columns that let it be rerun and checked, ranked by the means, its verdict against the
    best a paired t-test over the seeds (scipy's) at the lr tune chose."""
    from scipy.stats import ttest_rel

    out, csv_path, page = tmp_path / "lb", tmp_path / "leaderboard.csv", tmp_path / "lb.md"
    readme = tmp_path / "README.md"  # its leaderboard block, between the marks, is replaced
    readme.write_text("# x\n\n<!-- leaderboard: generated by benchmarks/leaderboard.py -->\n"
                      "old\n<!-- /leaderboard -->\n\nafter\n")
    bench("leaderboard.py", "--optimizers", "sgd,adam", "--epochs", "1", "--seeds", "0,1,2",
          "--tune-seeds", "0,1", "--lr-points", "2", "--lr-decades", "1", "--dataset", "digits",
          "--jobs", "2", "--out", str(out), "--results", str(csv_path), "--page", str(page),
          "--readme", str(readme), tiny=False)
    import csv

    def read(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    rows = {r["optimizer"]: r for r in read(csv_path)}
    assert set(rows) == {"sgd", "adam"}
    for column in ("optimizer", "lr", "final_val_acc_mean", "final_val_acc_ci95_low",
                   "final_val_acc_ci95_high", "final_subopt_mean", "rank_subopt",
                   "rank_val_acc", "val_acc_vs_best", "subopt_vs_best",
                   "median_grad_evals_to_subopt", "seconds_per_epoch"):
        assert column in next(iter(rows.values())), column
    chosen = {r["optimizer"]: r["chosen_lr"] for r in read(out / "tune" / "tuning.csv")}
    assert {n: r["lr"] for n, r in rows.items()} == {n: str(float(v)) for n, v in
                                                      chosen.items()}
    for metric, column, lower in (("final_val_acc", "val_acc", False),
                                  ("suboptimality", "subopt", True)):
        seeds = {n: {int(r["seed"]): float(r[metric]) for r in read(out / "tuned" / n /
                                                                      "runs.csv")}
                 for n in rows}
        means = {n: sum(v.values()) / len(v) for n, v in seeds.items()}
        best = (min if lower else max)(means, key=means.get)
        other = next(n for n in rows if n != best)
        assert rows[best][f"rank_{column}"] == "1" and rows[other][f"rank_{column}"] == "2"
        p = ttest_rel([seeds[other][s] for s in (0, 1, 2)],
                      [seeds[best][s] for s in (0, 1, 2)]).pvalue
        assert float(rows[other][f"{column}_p_holm"]) == pytest.approx(p)  # one comparison
        assert rows[other][f"{column}_vs_best"] == ("worse" if p < 0.05 else
                                                    "indistinguishable")
    assert "| `sgd` |" in page.read_text() and "| `adam` |" in page.read_text()
    text = readme.read_text()  # the top rows by validation accuracy, the rest kept
    assert "old" not in text and text.startswith("# x") and text.endswith("after\n")
    best_first = sorted(rows.values(), key=lambda r: int(r["rank_val_acc"]))
    shown = [line.split("`")[1] for line in text.splitlines() if line.startswith("| 1 |")
             or line.startswith("| 2 |")]
    assert shown == [r["optimizer"] for r in best_first]
    again = tmp_path / "again.md"  # --tables-only: the same page from leaderboard.csv alone
    bench("leaderboard.py", "--tables-only", "--dataset", "digits", "--out", str(out),
          "--results", str(csv_path), "--page", str(again), "--readme", str(readme), tiny=False)
    body = [line for line in page.read_text().splitlines() if line.startswith("|")]
    assert body == [line for line in again.read_text().splitlines() if line.startswith("|")]


def test_bench_newton_tables_each_method_from_its_own_curve(bench, tmp_path):
    """Steps to each target are read off the method's f - f* curve, the final value is the
    curve's last, Newton-CG's iterates reach 1e-6 (its certified optimum), and the first-order
    methods' curves start at f(0) - f*."""
    bench("bench_newton.py", "--methods", "gradient descent,soap")
    result = json.loads((tmp_path / "bench_newton.json").read_text())
    curves = result["curves"]
    assert [r["method"] for r in result["rows"]] == ["newton-cg", "gradient descent", "soap"]
    for row in result["rows"]:
        curve = curves[row["method"]]
        assert row["final"] == curve[-1]
        for t in (1e-3, 1e-6):
            first = row[f"steps_to_{t:g}"]
            below = [i + 1 for i, v in enumerate(curve) if v < t]
            assert first == (below[0] if below else None)
    assert result["rows"][0]["steps_to_1e-06"] is not None
    assert all(len(curves[m]) == 5 for m in ("gradient descent", "soap"))
    assert all(0 < curves[m][0] < math.log(10) for m in ("gradient descent", "soap"))
    assert (tmp_path / "newton.png").stat().st_size > 1000


def test_bench_natives_equal_their_references_and_ratios_are_quotients(bench, tmp_path):
    """SOAP and Shampoo (--tiny: 5 steps, the images' centre) equal their references within
    the kit's tolerances; each timing is the median of its rounds, each ratio their
    quotient."""
    proc = bench("bench_natives.py")
    result = json.loads((tmp_path / "bench_natives.json").read_text())
    assert [(r["native"], r["K"]) for r in result["rows"]] == [
        ("soap", 1), ("soap", 2), ("shampoo", 1), ("shampoo", 2)]
    for r in result["rows"]:
        assert r["gap_float32"] <= 1e-6 and r["gap_float64"] <= 1e-12
        for who in ("native", "plugin"):
            rounds = [float(x) for x in r[f"{who}_all"].split()]
            assert f"{r[f'{who}_seconds_per_model_epoch']:.3f}" == \
                f"{statistics.median(rounds):.3f}"
        assert r["plugin_over_native"] == pytest.approx(
            r["plugin_seconds_per_model_epoch"] / r["native_seconds_per_model_epoch"])
    assert "pytorch_optimizer:Shampoo" in proc.stdout
