"""Answers a reader can trust: intervals over seeds and paired differences (recomputed here
with scipy from results.csv), time to target, gradient evaluations, the gradient noise
scale (against a brute-force per-example computation), McCandlish et al.'s fit, the
performance profile and the tuning choice."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from stochopt import Config, fit
from stochopt.cli import main
from stochopt.noise import noise_scales
from stochopt.study import artefacts, experiment, plan
from stochopt.study.analysis import Targets, choose_lrs
from stochopt.study.stats import mccandlish_fit, performance_profile, t_quantile, t_two_sided
from stochopt.train import plan_groups

SEEDS = [0, 1, 2]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trusted(split, tmp_path_factory):
    """sgd and nesterov at momentum 0 are one algorithm (identical numbers); sgd at lr 1e-4
    barely moves; momentum at 0.1 learns. Three seeds, batch 1000, two epochs."""
    out = tmp_path_factory.mktemp("trust")
    variants = [("sgd", 0.1, {}), ("nesterov", 0.1, {"momentum": 0.0}), ("sgd", 1e-4, {}),
                ("momentum", 0.1, {})]
    configs = [Config(o, lr=lr, batch_size=1000, epochs=2, seed=s, hyper=h)
               for o, lr, h in variants for s in SEEDS]
    records = experiment.run(configs, split, out)
    found = artefacts.write_all(out, records, "trust", split, targets=Targets(val_acc=88.0))
    return out, found


def test_summary_intervals_equal_scipy_recomputed_from_results_csv(trusted):
    out, _ = trusted
    config_of = {r["run"]: r["config"] for r in _csv(out / "runs.csv")}
    test_acc = {r["run"]: float(r["test_acc"]) for r in _csv(out / "runs.csv")}
    final: dict[str, dict[str, list[float]]] = {}
    for row in _csv(out / "results.csv"):
        if row["epoch"] == "2":
            f = final.setdefault(config_of[row["run"]], {"final_val_acc": [],
                                                         "final_val_loss": [], "test_acc": []})
            f["final_val_acc"].append(float(row["val_acc"]))
            f["final_val_loss"].append(float(row["val_loss"]))
            f["test_acc"].append(test_acc[row["run"]])
    summary = {r["config"]: r for r in _csv(out / "summary.csv")}
    assert set(summary) == set(final) and len(summary) == 4
    for config, metrics in final.items():
        assert int(summary[config]["n_seeds"]) == 3
        for metric, values in metrics.items():
            x = np.array(values, dtype=np.float64)
            half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
            row = summary[config]
            assert float(row[f"{metric}_mean"]) == pytest.approx(x.mean(), rel=1e-12)
            assert float(row[f"{metric}_sd"]) == pytest.approx(x.std(ddof=1), rel=1e-9)
            assert float(row[f"{metric}_ci95_low"]) == pytest.approx(x.mean() - half, rel=1e-9)
            assert float(row[f"{metric}_ci95_high"]) == pytest.approx(x.mean() + half, rel=1e-9)


def test_paired_intervals_equal_scipy_and_the_verdicts_follow(trusted):
    out, _ = trusted
    runs = _csv(out / "runs.csv")
    rows = _csv(out / "comparisons.csv")
    assert len(rows) == 6 * 2  # 4 configurations: 6 pairs, 2 metrics each
    for c in rows:
        a = {r["seed"]: float(r[c["metric"]]) for r in runs if r["config"] == c["a"]}
        b = {r["seed"]: float(r[c["metric"]]) for r in runs if r["config"] == c["b"]}
        d = np.array([a[s] - b[s] for s in a])
        assert int(c["n"]) == 3 and float(c["mean_diff"]) == pytest.approx(d.mean(), abs=1e-12)
        if d.std() > 0:
            low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
            assert float(c["ci95_low"]) == pytest.approx(low, rel=1e-9)
            assert float(c["ci95_high"]) == pytest.approx(high, rel=1e-9)
    verdict = {(c["a"], c["b"], c["metric"]): c for c in rows}
    same = verdict[("sgd lr=0.1", "nesterov", "final_val_acc")]
    assert same["verdict"] == "indistinguishable" and float(same["mean_diff"]) == 0.0
    slow = verdict[("sgd lr=0.0001", "momentum", "final_val_acc")]
    assert slow["verdict"] == "b better" and float(slow["ci95_high"]) < 0
    loss = verdict[("sgd lr=0.0001", "momentum", "final_val_loss")]
    assert loss["verdict"] == "b better" and float(loss["ci95_low"]) > 0  # lower loss wins
    report = (out / "report.md").read_text()
    assert "momentum beats sgd lr=0.0001 by" in report
    assert "sgd lr=0.1 and nesterov are indistinguishable at 3 seeds" in report


def test_time_to_target_is_the_first_crossing_in_results_csv(trusted, split):
    out, _ = trusted
    results = _csv(out / "results.csv")
    n, reached = len(split.X_train), 0
    for run in _csv(out / "runs.csv"):
        rows = [r for r in results if r["run"] == run["run"]]
        assert [int(r["steps"]) for r in rows] == [math.ceil(n / 1000) * e for e in (1, 2)]
        assert [int(r["grad_evals"]) for r in rows] == [n, 2 * n]
        hits = [r for r in rows if float(r["val_acc"]) >= 88.0]
        if not hits:
            assert run["epoch_to_target"] == run["steps_to_target"] == ""
            continue
        reached += 1
        first = hits[0]
        assert int(run["epoch_to_target"]) == int(first["epoch"])
        assert int(run["steps_to_target"]) == int(first["steps"])
        assert int(run["grad_evals_to_target"]) == int(first["grad_evals"])
        seconds = sum(float(r["seconds"]) for r in rows if int(r["epoch"]) <= int(first["epoch"]))
        assert float(run["seconds_to_target"]) == pytest.approx(seconds)
    assert 0 < reached < 12  # sgd at 1e-4 never gets there; the others do


@pytest.mark.parametrize("optimizer, passes, initial", [("svrg", 3, 0), ("saga", 1, 1)])
def test_grad_evals_count_the_variance_reduced_methods_full_passes(split, optimizer, passes,
                                                                   initial):
    """SVRG: a full gradient at each epoch's snapshot, then each example at W and at the
    snapshot (3 passes per epoch); SAGA: its table at W = 0 once, then one pass per epoch."""
    (record,) = fit(Config(optimizer, batch_size=4000, epochs=2), split)
    n = len(split.X_train)
    assert [r["grad_evals"] for r in record.rows] == [n * (initial + passes * e) for e in (1, 2)]


def test_grad_evals_count_mars_two_gradients_per_example(split):
    """MARS reads each batch at w_t and at w_{t-1}: two gradient evaluations per example, at
    the epoch's ends and at the points inside it."""
    (record,) = fit(Config("mars", batch_size=4000, epochs=2, eval_every=3), split)
    n = len(split.X_train)
    assert [r["grad_evals"] for r in record.rows] == [2 * n, 4 * n]
    assert [p["grad_evals"] for p in record.points][:2] == [2 * 3 * 4000, 2 * 6 * 4000]
    (sgd,) = fit(Config("sgd", batch_size=4000, epochs=1), split)
    assert sgd.rows[0]["grad_evals"] == n


def test_noise_scale_equals_a_per_example_autograd_computation(split):
    torch.manual_seed(0)
    X = split.X_train[:300].double()
    y = split.y_train[:300]
    W = 0.01 * torch.randn(X.shape[1], 10, dtype=torch.float64)
    grads = []
    for i in range(len(X)):  # the brute force: each example's gradient by autograd
        w = W.clone().requires_grad_()
        torch.nn.functional.cross_entropy((X[i:i + 1] @ w), y[i:i + 1]).backward()
        grads.append(w.grad.flatten())
    g = torch.stack(grads)
    G = g.mean(0)
    gsq = float(G @ G)
    trace = float((g * g).sum(1).mean()) - gsq
    (mine,) = noise_scales(W, X, y)
    assert mine.grad_norm_sq == pytest.approx(gsq, rel=1e-8)
    assert mine.trace_sigma == pytest.approx(trace, rel=1e-8)
    assert mine.b_simple == pytest.approx(trace / gsq, rel=1e-8)
    assert mine.n == 300


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_fits_full_pass_made_once_gives_a_fresh_pass_numbers_at_every_epoch(
        split, monkeypatch, dtype):
    """The fit's FullPass keeps its float64 buffer and row norms between epochs: at new
    weights each call gives a fresh pass's numbers, bit for bit, over several chunks and a
    short last one (the copy into the buffer, unlike ``.double()``, must not leak a chunk
    into the next)."""
    import stochopt.noise as noise

    monkeypatch.setattr(noise, "CHUNK", 700)  # 2,000 rows: chunks of 700, 700 and 600
    X, y = split.X_train[:2000].to(dtype), split.y_train[:2000]
    once = noise.FullPass(X, y)
    torch.manual_seed(1)
    for epoch in range(3):
        W = 0.01 * (epoch + 1) * torch.randn(4, X.shape[1], 10, dtype=dtype)
        loss, gsq, sq = once(W, noise=epoch != 1)  # a loss-only pass between two
        fresh = noise.FullPass(X, y)(W, noise=epoch != 1)
        assert torch.equal(loss, fresh[0])
        if epoch != 1:
            assert torch.equal(gsq, fresh[1]) and torch.equal(sq, fresh[2])
            # and the per-example sum straight from its definition, one chunk-free pass
            R = torch.softmax(X @ W, -1) - torch.nn.functional.one_hot(y, 10).to(dtype)
            direct = ((R * R).sum(-1) * (X * X).sum(-1)).double().mean(-1)
            torch.testing.assert_close(sq, direct, rtol=1e-5, atol=0)


def test_noise_scale_command_prints_and_writes_the_zero_models_and_a_weight_files(
        data_dir, tmp_path, capsys, split):
    assert main(["noise-scale", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "noise_scale.json").read_text())
    zero = torch.zeros(split.n_features, 10, dtype=split.X_train.dtype)
    (ref,) = noise_scales(zero, split.X_train, split.y_train)
    assert printed["b_simple"] == pytest.approx(ref.b_simple) == written["b_simple"]
    assert set(printed) == {"b_simple", "grad_norm_sq", "trace_sigma", "n"}
    assert printed["n"] == len(split.X_train)
    np.save(tmp_path / "w.npy", np.ones((784, 3), np.float32))
    assert main(["noise-scale", "--data-dir", str(data_dir), "--weights",
                 str(tmp_path / "w.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected floats of shape (784, 10)" in err
    assert main(["noise-scale", "--data-dir", str(data_dir), "--weights",
                 str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_mccandlish_fit_recovers_known_s_min_and_e_min():
    s_min, e_min = 1200.0, 90_000.0
    sizes = np.array([32, 64, 128, 256, 512, 1024])
    steps = s_min + e_min / sizes  # on (S/S_min - 1)(E/E_min - 1) = 1 with E = B S
    assert np.allclose((steps / s_min - 1) * (sizes * steps / e_min - 1), 1)
    fit = mccandlish_fit(steps, sizes * steps)
    assert fit == pytest.approx((s_min, e_min), rel=1e-9)
    assert all(math.isnan(x) for x in mccandlish_fit([100.0], [6400.0]))


def test_performance_profile_counts_problems_within_tau_of_the_best():
    costs = {"a": {1: 10, 2: 40, 3: math.inf}, "b": {1: 20, 2: 20, 3: 30}}
    got = performance_profile(costs, [1, 2, 3])
    # a: best on 1, 2x on 2, never on 3; b: 2x on 1, best on 2 and 3
    assert got == {"a": [1 / 3, 2 / 3, 2 / 3], "b": [2 / 3, 1.0, 1.0]}


def _row(config, lr, loss):
    return {"config": config, "lr": lr, "batch_size": 64, "final_val_loss_mean": loss}


def test_tuning_picks_the_lowest_mean_validation_loss_and_never_a_diverged_lr():
    summary = [_row("sgd lr=0.01", 0.01, 0.40), _row("sgd lr=0.1", 0.1, 0.30),
               _row("sgd lr=1", 1.0, math.nan),  # a seed diverged: no mean
               _row("adam lr=0.001", 1e-3, 0.28), _row("adam lr=0.01", 1e-2, 0.27)]
    chosen = {c["tuned"]: c for c in choose_lrs(summary)}
    assert chosen["sgd"]["best"]["lr"] == 0.1 and not chosen["sgd"]["at_grid_edge"]
    assert chosen["adam"]["best"]["lr"] == 0.01 and chosen["adam"]["at_grid_edge"]


def test_tune_command_chooses_on_mean_validation_loss_over_seeds(data_dir, tmp_path, capsys):
    out = tmp_path / "tune"
    code = main(["tune", "--optimizers", "sgd", "--lrs", "0.01,0.3,1e4", "--epochs", "1",
                 "--seeds", "0,1", "--batch-size", "2000", "--data-dir", str(data_dir),
                 "--out", str(out), "--quiet", "--optimum", "skip"])
    assert code == 0
    runs = _csv(out / "runs.csv")
    assert {r["status"] for r in runs if r["lr"] == "10000.0"} == {"diverged"}
    means = {}
    for lr in ("0.01", "0.3"):
        means[lr] = np.mean([float(r["final_val_loss"]) for r in runs if r["lr"] == lr])
    (row,) = _csv(out / "tuning.csv")
    assert float(row["chosen_lr"]) == float(min(means, key=means.get))
    assert row["at_grid_edge"] == "False" and row["grid_points"] == "3"
    assert (out / "lr_sensitivity.png").stat().st_size > 0
    assert "## After tuning" in (out / "report.md").read_text()


def test_tune_grid_is_thirteen_log_spaced_lrs_over_three_decades_around_the_default():
    configs, _ = plan.tune_grid(["momentum", "adam"], {"seed": [0]})
    for optimizer, centre in (("momentum", 0.1), ("adam", 1e-3)):
        lrs = sorted(c.lr for c in configs if c.optimizer == optimizer)
        assert len(lrs) == 13 and lrs[6] == pytest.approx(centre)
        assert lrs[-1] / lrs[0] == pytest.approx(1000, rel=1e-5)
        assert np.allclose(np.diff(np.log10(lrs)), 0.25, atol=1e-5)
    # --lr-points and --lr-decades: another count over another span, one point the default
    from stochopt.cli import build_parser, configs_from_args

    args = build_parser().parse_args(["tune", "--optimizers", "adam", "--lr-points", "36",
                                      "--lr-decades", "7", "--seeds", "0"])
    lrs = [c.lr for c in configs_from_args(args)]
    assert len(lrs) == 36 and lrs[0] == pytest.approx(1e-3 * 10 ** -3.5, rel=1e-5)
    assert lrs[-1] == pytest.approx(1e-3 * 10 ** 3.5, rel=1e-5)
    args = build_parser().parse_args(["tune", "--optimizers", "adam", "--lr-points", "1"])
    assert {c.lr for c in configs_from_args(args)} == {1e-3}


def test_compare_defaults_to_five_seeds_trained_as_one_batch():
    from stochopt.cli import build_parser, configs_from_args

    args = build_parser().parse_args(["compare"])
    configs = configs_from_args(args)
    assert sorted({c.seed for c in configs}) == [0, 1, 2, 3, 4] and len(configs) == 15
    assert len(plan_groups(configs)) == 1


def test_p_values_are_scipy_paired_t_tests_and_holm_adjusts_per_family(trusted):
    """p_value is scipy's ttest_rel on the seeds; p_holm is Holm's over the pairs of one
    batch size and metric, recomputed here by hand from the p-values."""
    out, _ = trusted
    runs = _csv(out / "runs.csv")
    rows = _csv(out / "comparisons.csv")
    for c in rows:
        a = {r["seed"]: float(r[c["metric"]]) for r in runs if r["config"] == c["a"]}
        b = {r["seed"]: float(r[c["metric"]]) for r in runs if r["config"] == c["b"]}
        d = np.array([a[s] - b[s] for s in a])
        if d.std() > 0:
            expected = sps.ttest_rel([a[s] for s in a], [b[s] for s in a]).pvalue
            assert float(c["p_value"]) == pytest.approx(expected, rel=1e-9)
    for metric in ("final_val_acc", "final_val_loss"):
        family = [c for c in rows if c["metric"] == metric]
        p = [float(c["p_value"]) for c in family]
        m = len(p)
        order = sorted(range(m), key=lambda i: p[i])
        adjusted, running = [0.0] * m, 0.0
        for rank, i in enumerate(order):  # Holm: (m - rank) p_(rank), monotone, at most 1
            running = max(running, min(1.0, (m - rank) * p[i]))
            adjusted[i] = running
        assert [float(c["p_holm"]) for c in family] == pytest.approx(adjusted, rel=1e-12)
        assert all(int(c["family_size"]) == m for c in family)


def test_holm_against_a_hand_computation():
    from stochopt.study.stats import holm

    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.6]) == pytest.approx([1.0, math.nan, 1.0], nan_ok=True)


def test_a_difference_significant_alone_is_not_after_holm():
    """Three configurations, three pairs: a - c has p 0.03 alone (its interval excludes 0),
    which Holm multiplies past 5% in a family of three: the verdict is indistinguishable."""
    from stochopt.study.analysis import comparisons

    # a - c over 4 seeds: mean 1, sd chosen so that the paired t-test gives p ~ 0.03
    diffs = {0: 0.5, 1: 1.5, 2: 0.6, 3: 1.4}
    runs = []
    for s, dv in diffs.items():
        runs += [{"config": "a", "seed": s, "batch_size": 64, "final_val_acc": 90 + dv,
                  "final_val_loss": 0.3},
                 {"config": "b", "seed": s, "batch_size": 64, "final_val_acc": 90 + dv / 2
                  + (s % 2) * 3, "final_val_loss": 0.3},
                 {"config": "c", "seed": s, "batch_size": 64, "final_val_acc": 90.0,
                  "final_val_loss": 0.3}]
    table = {(c["a"], c["b"]): c for c in comparisons(runs) if c["metric"] == "final_val_acc"}
    ac = table[("a", "c")]
    alone = sps.ttest_rel([90 + d for d in diffs.values()], [90.0] * 4).pvalue
    assert ac["p_value"] == pytest.approx(alone) and 0.0167 < alone < 0.05
    assert ac["ci95_low"] > 0  # unadjusted, the interval excludes 0
    assert ac["p_holm"] >= 0.05 and ac["verdict"] == "indistinguishable"


def test_the_median_over_seeds_is_numpys_median():
    """The tables' and the bootstrap's median (by sorting) gives numpy's number exactly: odd
    and even counts, runs that never reached the target (None, counted as infinite), a
    median that is infinite or a NaN value (None)."""
    from stochopt.study.analysis import _median

    rng = np.random.default_rng(7)
    for _ in range(2000):
        n = int(rng.integers(1, 12))
        values = [None if rng.random() < 0.2 else float(rng.integers(1, 10**6)) / 7
                  for _ in range(n)]
        if rng.random() < 0.05:
            values[int(rng.integers(0, n))] = math.nan
        expected = float(np.median([math.inf if v is None else v for v in values]))
        got = _median(values)
        assert (got is None and not math.isfinite(expected)) or got == expected, values
    assert _median([]) is None


def test_the_bootstrap_intervals_agree_with_scipys_bootstrap():
    """S_min, E_min and B_crit's percentile intervals over the seeds, against
    scipy.stats.bootstrap resampling each batch size's runs independently with the same
    statistic (the medians' fit): equal up to Monte Carlo error."""
    from stochopt.study.analysis import _fit, bootstrap_fit

    rng = np.random.default_rng(5)
    sizes = [64, 256, 1024]
    # steps on the curve S = S_min + E_min / B (S_min 400, E_min 60,000), with seed noise
    steps = {b: list(np.round((400 + 60_000 / b) * rng.lognormal(0, 0.15, 7)))
             for b in sizes}
    ours = bootstrap_fit(steps, resamples=5_000, seed=1)

    def statistic(name):
        def value(*samples):
            medians = {b: float(np.median(s)) for b, s in zip(sizes, samples, strict=True)}
            s_min, e_min = _fit(medians)
            return {"s_min": s_min, "e_min": e_min, "b_crit": e_min / s_min}[name]
        return value

    for name in ("s_min", "e_min", "b_crit"):
        theirs = sps.bootstrap([np.array(steps[b]) for b in sizes], statistic(name),
                               vectorized=False, paired=False, n_resamples=5_000,
                               method="percentile", random_state=2).confidence_interval
        assert ours[name][0] == pytest.approx(theirs.low, rel=0.05), name
        assert ours[name][1] == pytest.approx(theirs.high, rel=0.05), name
        assert ours[name][0] < ours[name][1]


def _exact_two_sided(t, df):
    """``P(|T| > t)`` to 40 digits: mpmath's regularized incomplete beta ``I_x(df/2, 1/2)``."""
    import mpmath

    mpmath.mp.dps = 40
    x = mpmath.mpf(df) / (df + mpmath.mpf(t) ** 2)
    return mpmath.betainc(mpmath.mpf(df) / 2, mpmath.mpf(1) / 2, 0, x, regularized=True)


@pytest.mark.parametrize("df", [*range(1, 13), 29, 30, 101, 1000])
def test_students_t_in_closed_form_equals_mpmath_in_both_tails(df):
    """The intervals' and p-values' t, summed in closed form for an integer df: within
    1e-12 of mpmath's 40-digit incomplete beta, however far in the tail (scipy's stdtr is
    3e-9 off near t = 0), and its quantiles scipy's stdtrit's."""
    from scipy.special import stdtrit

    for t in (0.0, 1e-9, 0.05, 0.7, 1.0, 2.2, 4.0, 9.0, 40.0, 1e3, 1e6):
        exact = _exact_two_sided(t, df)
        assert t_two_sided(t, df) == pytest.approx(float(exact), rel=1e-12, abs=0), t
    for q in (1e-10, 0.001, 0.025, 0.2, 0.5, 0.8, 0.975, 0.999, 1 - 1e-10):
        t = t_quantile(q, df)
        assert t == pytest.approx(float(stdtrit(df, q)), rel=1e-9, abs=1e-12), q
        tail = 2 * min(q, 1 - q)  # what the quantile leaves in both tails
        assert float(_exact_two_sided(abs(t), df)) == pytest.approx(tail, rel=1e-11), q


def test_students_t_takes_whole_degrees_of_freedom_only():
    for df in (0, 2.5, -1):
        with pytest.raises(ValueError, match="positive integer"):
            t_two_sided(1.0, df)


def test_the_statistics_import_no_scipy():
    """A study's intervals and p-values come without scipy (its import took 0.3-0.45 s)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from stochopt.study import stats\n"
            "i = stats.interval([91.6, 92.1, 91.9])\n"
            "p = stats.p_value(stats.paired({0: 1.0, 1: 2.5, 2: 2.0}, {0: 0.5, 1: 0.7, 2: 1.0}))\n"
            "assert 0 < p < 1 and i.low < 91.87 < i.high\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
