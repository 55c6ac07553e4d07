"""The report: the per-configuration table, the figures, and answers written from the numbers
of this very run. Every sentence is built here, from the tables of :mod:`.analysis`
(``summary``, ``comparisons``, the batch-size fit, the tuning choice), so the notebook and
the report say the same thing and stay true when the settings change.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import write_text
from .stats import binomial_se

TABLE_COLUMNS = [("config", "configuration"), ("n_seeds", "seeds"),
                 ("final_val_acc", "val acc % (95% CI)"), ("final_val_loss", "val loss"),
                 ("test_acc", "test acc % (95% CI)"), ("reached_target", "reached target"),
                 ("median_epoch_to_target", "epochs to target"),
                 ("suboptimality_median", "f - f*"), ("seconds_per_epoch", "s/epoch")]


def fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return "–" if value is None else str(value)


def _ci(row: dict, metric: str, digits: int = 2) -> str:
    mean, low, high = (row[f"{metric}{s}"] for s in ("_mean", "_ci95_low", "_ci95_high"))
    if math.isnan(mean):
        return "–"
    if row["n_seeds"] < 2 or low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def cell(row: dict, key: str) -> str:
    if key in ("final_val_acc", "test_acc"):
        return _ci(row, key)
    if key == "final_val_loss":
        return _ci(row, key, 4)
    if key == "reached_target":
        return f"{round(row[key] * row['n_seeds'])}/{row['n_seeds']}"
    if key == "median_epoch_to_target" and row[key] is not None:
        return f"{row[key]:g}"
    return fmt(row[key])


# --------------------------------------------------------------------------- sentences


def pair_sentence(c: dict, name: dict[str, str] | None = None) -> str:
    """'A beats B by x points (95% CI a..b, n seeds)' or 'A and B are indistinguishable'."""
    a, b = (name or {}).get(c["a"], c["a"]), (name or {}).get(c["b"], c["b"])
    loss = c["metric"] == "final_val_loss"
    unit = "" if loss else " points"
    digits = 4 if loss else 2
    n = f"{c['n']} seed{'s' if c['n'] != 1 else ''}"
    if c["verdict"] == "undetermined":
        return f"{a} and {b} cannot be told apart with {n} (no interval)"
    test = _p_text(c)
    if c["verdict"] == "indistinguishable":
        return (f"{a} and {b} are indistinguishable at {n} (difference "
                f"{c['mean_diff']:+.{digits}f}{unit}, 95% CI {c['ci95_low']:+.{digits}f} to "
                f"{c['ci95_high']:+.{digits}f}{test})")
    win, lose = (a, b) if c["verdict"] == "a better" else (b, a)
    # the margin in the winner's favour: a - b for accuracy, b - a for loss, when a won
    sign = (1 if c["verdict"] == "a better" else -1) * (-1 if loss else 1)
    lo, hi = sorted((sign * c["ci95_low"], sign * c["ci95_high"]))
    what = " in validation loss" if loss else ""
    return (f"{win} beats {lose}{what} by {sign * c['mean_diff']:.{digits}f}{unit} (95% CI "
            f"{lo:.{digits}f} to {hi:.{digits}f}, {n}{test})")


def _p_text(c: dict) -> str:
    """', p 0.012, Holm 0.036' where the comparison has its tests (older tables do not)."""
    p, holm = c.get("p_value", math.nan), c.get("p_holm", math.nan)
    if not (isinstance(p, float) and math.isfinite(p)):
        return ""
    return f", p {p:.2g}, Holm {holm:.2g}"


def ranking(rows: Sequence[dict], pairs: Sequence[dict], metric: str = "final_val_acc") -> str:
    """'adam > nesterov = momentum': by mean, '=' where neighbours are indistinguishable."""
    ordered = sorted(rows, key=lambda r: -r[f"{metric}_mean"])
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in pairs if c["metric"] == metric}
    text = ordered[0]["config"] if ordered else ""
    for prev, row in itertools.pairwise(ordered):
        v = verdicts.get((prev["config"], row["config"])) or verdicts.get(
            (row["config"], prev["config"]))
        text += (" > " if v in ("a better", "b better") else " = ") + row["config"]
    return text


def compare_sentences(summary: Sequence[dict], pairs: Sequence[dict], n_test: int | None
                      ) -> str:
    """How the configurations compare at the most common batch size, with intervals."""
    ok = [r for r in summary if math.isfinite(r["final_val_acc_mean"])]
    if len({r["config"] for r in ok}) < 2:
        return ""
    sizes = [r["batch_size"] for r in ok]
    size = max(set(sizes), key=sizes.count)
    rows = sorted((r for r in ok if r["batch_size"] == size),
                  key=lambda r: -r["final_val_acc_mean"])
    mine = [c for c in pairs if c["batch_size"] == size and c["metric"] == "final_val_acc"]
    n = rows[0]["n_seeds"]
    text = (f"At batch {size}, final validation accuracy, mean over {n} seed"
            f"{'s' if n > 1 else ''} with its 95% interval: "
            + "; ".join(f"{r['config']} {_ci(r, 'final_val_acc')}%" for r in rows) + ". ")
    if n < 2:
        text += ("With one seed there is no interval, so no difference can be called real; "
                 "run several seeds (--seeds) to tell them apart. ")
    else:
        text += (f"Ranking ('=' where neighbours' paired difference is not significant at "
                 f"5% after Holm's correction): {ranking(rows, mine)}. ")
    if mine and n >= 2:
        text += (f"Paired by seed (same data order), {len(mine)} pair"
                 f"{'s' if len(mine) != 1 else ''} compared, each verdict at 5% after "
                 "Holm-Bonferroni's correction over them (the intervals are unadjusted): "
                 + "; ".join(pair_sentence(c) for c in mine) + ". ")
    fastest = min(rows, key=lambda r: r["seconds_per_epoch"])
    own = ", ".join(f"{r['config']} {r['seconds_per_epoch']:.3f} s" for r in
                    sorted(rows, key=lambda r: r["seconds_per_epoch"]))
    if len({r["batch_seconds_per_epoch"] for r in rows}) == 1:
        # one batch of K: one wall time, split into each run's own cost
        text += (f"They trained together as one batch of {len(rows) * n} models ({len(rows)} "
                 f"configurations x {n} seed{'s' if n > 1 else ''}), "
                 f"{rows[0]['batch_seconds_per_epoch']:.3f} s of wall time per epoch; each "
                 f"run's own cost per epoch (its share of the shared products plus its "
                 f"rule's update): {own}. ")
    else:
        text += (f"The cheapest epoch was {fastest['config']}'s, "
                 f"{fastest['seconds_per_epoch']:.3f} s (each run's own cost: {own}). ")
    best = rows[0]
    if n_test and math.isfinite(best["test_acc_mean"]):
        se = binomial_se(best["test_acc_mean"], n_test)
        text += (f"The best, {best['config']}, has test accuracy {best['test_acc_mean']:.2f}% "
                 f"± {se:.2f} (binomial standard error over the {n_test:,} test images, "
                 "which the seeds share and so cannot shrink).")
    return text


def target_sentences(summary: Sequence[dict], target_acc: float) -> str:
    parts = []
    for r in summary:
        reached = round(r["reached_target"] * r["n_seeds"])
        if r["median_epoch_to_target"] is None:
            parts.append(f"{r['config']} {reached}/{r['n_seeds']} seeds")
        else:
            parts.append(f"{r['config']} {reached}/{r['n_seeds']} seeds, median epoch "
                         f"{r['median_epoch_to_target']:g} ({r['median_steps_to_target']:,.0f} "
                         f"steps, {r['median_grad_evals_to_target']:,.0f} gradient evaluations)")
    return (f"Validation accuracy {target_acc:g}% (checked at every evaluation point: each "
            "epoch's end and, with --eval-every or --eval-points, the steps between) was "
            "reached by: " + "; ".join(parts) + ".")


def batch_size_accuracy(summary: Sequence[dict]) -> str:
    """Final validation accuracy against the batch size, per optimizer, with intervals."""
    parts = []
    for optimizer in dict.fromkeys(r["optimizer"] for r in summary):
        rows = sorted((r for r in summary if r["optimizer"] == optimizer),
                      key=lambda r: r["batch_size"])
        parts.append(f"{optimizer}: " + ", ".join(f"{r['batch_size']}: "
                                                  f"{_ci(r, 'final_val_acc')}%" for r in rows))
    return ("Final validation accuracy by batch size (mean over seeds, 95% interval), after "
            "the same number of epochs, so fewer steps for larger batches: "
            + "; ".join(parts) + ".")


def batch_size_sentences(fit: dict[str, dict[str, Any]], noise0: float | None) -> str:
    """Steps to target per batch size, the fitted critical batch with its intervals, and the
    noise scale at the end and along the run."""
    parts = []
    for solver, f in fit.items():
        fixed = ", ".join(f"{p['batch_size']}: " + ("not reached" if p["fixed_steps"] is None
                                                    else f"{p['fixed_steps']:,.0f}")
                          for p in f["points"])
        text = f"{solver}, median steps to the study's accuracy target by batch size: {fixed}."
        if f["target"] is None:
            parts.append(text + " No accuracy was reached at every batch size: no fit.")
            continue
        pts = ", ".join(f"{p['batch_size']}: " + ("not reached" if p["steps"] is None else
                                                  f"{p['steps']:,.0f} steps")
                        for p in f["points"])
        text += (f" To fit the critical batch every batch size must reach the target, so it is "
                 f"{f['target']:.1f}% for {solver}, the highest validation accuracy the median "
                 f"seed reached at every batch size; the first evaluation point to reach it "
                 f"(median over seeds): {pts}.")
        if f["b_crit"] is not None:
            def ci(name: str, scale: float = 1.0, fmt: str = ",.0f", f: dict = f) -> str:
                low, high = f.get(f"{name}_ci95", [math.nan, math.nan])
                if not math.isfinite(high):
                    return f" (95% bootstrap interval over the seeds from {low * scale:{fmt}} " \
                           "to unbounded: some resamples cannot be fitted)"
                return (f" (95% bootstrap interval over the seeds {low * scale:{fmt}} to "
                        f"{high * scale:{fmt}})")

            per_epoch = f["e_min_epochs"] / f["e_min"] if f["e_min_epochs"] else 1.0
            text += (f" McCandlish et al.'s (S/S_min - 1)(E/E_min - 1) = 1 through these "
                     f"{f['n_points']} points gives S_min = {f['s_min']:,.0f} steps"
                     f"{ci('s_min')}, E_min = {f['e_min_epochs']:.3g} epochs"
                     f"{ci('e_min', per_epoch, '.3g')}, so a critical batch B_crit = "
                     f"E_min/S_min = {f['b_crit']:,.0f}{ci('b_crit')}.")
            below = [p["batch_size"] for p in f["points"] if p["batch_size"] < f["b_crit"]]
            text += (f" Below B_crit ({', '.join(map(str, below)) or 'none of these'}) a larger "
                     "batch needs proportionally fewer steps; above it, more data per step "
                     "buys few steps and costs more examples.")
        else:
            text += (f" Too few batch sizes reached it ({f['n_points']}) to fit the critical "
                     "batch.")
        ends = [p["noise_scale_end"] for p in f["points"] if math.isfinite(p["noise_scale_end"])]
        if ends:
            text += (" The measured noise scale B_simple at the end of training: "
                     + ", ".join(f"{p['batch_size']}: {p['noise_scale_end']:,.0f}"
                                 for p in f["points"] if math.isfinite(p["noise_scale_end"]))
                     + ".")
            along = [p for p in f["points"] if len(p["noise_scale_along"]) > 2]
            if along:
                p = along[0]
                first, last = p["noise_scale_along"][0], p["noise_scale_along"][-1]
                text += (f" Along the run (batch {p['batch_size']}, {len(p['noise_scale_along'])}"
                         f" evaluation points) it goes from {first[1]:,.0f} at step "
                         f"{first[0]:,.0f} to {last[1]:,.0f} at step {last[0]:,.0f}.")
        if f["b_crit"] is not None and ends:
            ratio = (sum(ends) / len(ends)) / f["b_crit"]
            text += (f" It is {ratio:.2g} times the fitted B_crit: "
                     + ("they agree within a factor of 3, as McCandlish et al. predict for "
                        "B_simple ~ B_crit." if 1 / 3 <= ratio <= 3 else
                        "they differ by more than a factor of 3; McCandlish et al. found "
                        "B_simple a rough (order-of-magnitude) predictor."))
        parts.append(text)
    if noise0 is not None:
        parts.append(f"At the zero model B_simple = {noise0:,.1f}: early on, the full "
                     "gradient is large next to the per-example noise, so small batches "
                     "already estimate it well; the noise scale grows as training converges.")
    return " ".join(parts)


def tuning_sentences(chosen: Sequence[dict], pairs: Sequence[dict], n_test: int | None = None
                     ) -> str:
    parts = []
    for c in chosen:
        best = c["best"]
        if best is None:
            parts.append(f"{c['tuned']} at batch {c['batch_size']}: every lr diverged.")
            continue
        edge = (" (at the edge of the grid: the best lr may lie beyond it)"
                if c["at_grid_edge"] else "")
        parts.append(f"{c['tuned']} at batch {c['batch_size']}: lr {best['lr']:.3g}{edge}, "
                     f"validation loss {_ci(best, 'final_val_loss', 4)}, accuracy "
                     f"{_ci(best, 'final_val_acc')}%, test {_ci(best, 'test_acc')}%.")
    names = {c["best"]["config"]: c["tuned"] for c in chosen if c["best"]}
    mine = [p for p in pairs if p["a"] in names and p["b"] in names
            and p["metric"] == "final_val_acc"]
    if mine:
        parts.append("Tuned against tuned, paired by seed: "
                     + "; ".join(pair_sentence(p, names) for p in mine) + ".")
    done = [c["best"] for c in chosen if c["best"] is not None]
    if done and n_test:
        top = min(done, key=lambda r: r["final_val_loss_mean"])
        parts.append(f"The best after tuning, {names[top['config']]} (lr {top['lr']:.3g}, batch "
                     f"{top['batch_size']}), has test accuracy {top['test_acc_mean']:.2f}% ± "
                     f"{binomial_se(top['test_acc_mean'], n_test):.2f} (binomial standard error "
                     f"over the {n_test:,} test images).")
    return ("Each optimizer's lr was chosen on mean final validation loss over the seeds, a "
            "diverged run losing; only then were the test metrics read. " + " ".join(parts))


def notes(runs: Sequence[dict]) -> dict[str, str]:
    """The caveats the runs call for (f_best at wd 0, decoupled decay, divergence)."""
    out: dict[str, str] = {}
    if any(r.get("f_star_attained") is False for r in runs):
        out["What does f - f* mean here?"] = (
            "At weight decay 0 the problem has no minimiser (a few pixels are lit in one "
            "class only, so f keeps falling as their weights grow): the column shows f - "
            "f_best, where f_best is the lowest value the solver reached, an upper bound on "
            "the infimum. A negative value means the run went below that bound.")
    decoupled = sorted({r["optimizer"] for r in runs if r.get("decoupled_decay")})
    if decoupled:
        out["Why is f - f* empty for some runs?"] = (
            f"{', '.join(decoupled)} decay the weights directly (w <- (1 - lr wd) w, "
            "decoupled from the gradient), so they do not minimise f + (wd/2)|w|^2 and no "
            "f* measures their progress; their f - f* column is left empty (it is filled "
            "when their weight decay is 0).")
    diverged = [r for r in runs if r["status"] != "ok"]
    if diverged:
        out["Which runs diverged?"] = (
            ", ".join(f"{r['config']} (seed {r['seed']})" for r in diverged)
            + " diverged (a NaN/inf loss or one over 100x the zero model's); their curves "
              "end in an x, and their configuration's means are left empty.")
    return out


# --------------------------------------------------------------------------- pages


def _headers(table: Sequence[dict], runs: Sequence[dict]) -> list[str]:
    kinds = {r.get("f_star_attained") for r in runs} - {None}
    sub = "f - f_best (upper bound)" if kinds == {False} else (
        "f - f* (or f - f_best)" if kinds == {True, False} else "f - f*")
    return [sub if k == "suboptimality_median" else h for k, h in TABLE_COLUMNS]


def markdown(table: Sequence[dict], runs: Sequence[dict], figures: Sequence[str], title: str,
             sections: dict[str, str]) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(_headers(table, runs)) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in TABLE_COLUMNS) + " |" for r in table]
    for question, text in sections.items():
        lines += ["", f"## {question}", "", text]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_report(out: Path, table: Sequence[dict], runs: Sequence[dict],
                 figures: Sequence[str], title: str, sections: dict[str, str]) -> None:
    """report.md: the per-configuration table, then each question's answer (``sections``:
    question -> text), then the figures (report.html is :mod:`.page`'s)."""
    write_text(out / "report.md", markdown(table, runs, figures, title, sections))
