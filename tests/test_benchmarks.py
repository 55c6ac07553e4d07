"""The benchmark script runs end to end on a tiny setting, so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script, tmp_path, data_dir):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**__import__("os").environ, "STOCHOPT_DATA": str(data_dir)},
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_bench_epoch_runs_and_writes_its_table(tmp_path, data_dir):
    proc = _run("bench_epoch.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_epoch.json").read_text())
    names = [r["what"] for r in result["rows"]]
    for prefix in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all(r > 0 for r in result["ratios"].values())
    assert (tmp_path / "bench_epoch.csv").is_file() and "(d)/(e)" in proc.stdout


def test_bench_seeds_runs_and_writes_its_ratio(tmp_path, data_dir):
    proc = _run("bench_seeds.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_seeds.json").read_text())
    assert [r["what"] for r in result["rows"]] == ["stochopt compare --seeds 0",
                                                   "stochopt compare --seeds 0,1,2,3,4"]
    assert result["ratio"] > 0 and "five seeds / one seed" in proc.stdout


def test_bench_optimum_runs_and_writes_its_ratios(tmp_path, data_dir):
    proc = _run("bench_optimum.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_optimum.json").read_text())
    assert {r["what"].split(" (")[0] for r in result["rows"]} == {
        "stochopt newton-cg", "stochopt l-bfgs", "scikit-learn LogisticRegression"}
    s = result["summary"]["0.001"]
    assert s["newton_vs_lbfgs"] > 0 and s["certified_gap"] >= 0 and "targets >= 5x" in proc.stdout


def test_bench_cv_runs_and_writes_its_ratio(tmp_path, data_dir):
    proc = _run("bench_cv.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_cv.json").read_text())
    assert [r["what"] for r in result["rows"]] == ["SoftmaxRegressionCV (grid at once)",
                                                   "GridSearchCV(SoftmaxRegression)"]
    assert result["ratio"] > 0 and "target >= 4x" in proc.stdout


def test_bench_rules_covers_every_optimizer(tmp_path, data_dir):
    _run("bench_rules.py", tmp_path, data_dir)
    result = json.loads((tmp_path / "bench_rules.json").read_text())
    from stochopt.optim import RULES

    assert {r["optimizer"] for r in result["rows"]} == set(RULES) - {"toy-signsgd"}
    assert all(r["seconds_per_epoch_k1"] > 0 for r in result["rows"])
