"""The report: the summary table, the figures, and observations written from the numbers of
this very run (every sentence is built from the table; nothing is canned)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from .files import write_text

TABLE_COLUMNS = [("optimizer", "optimizer"), ("lr", "lr"), ("batch_size", "batch"),
                 ("seed", "seed"), ("status", "status"), ("final_val_acc", "val acc %"),
                 ("final_val_loss", "val loss"), ("best_epoch", "best epoch"),
                 ("test_acc", "test acc %"), ("suboptimality", "f - f*"),
                 ("seconds_per_epoch", "s/epoch")]


def fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return "–" if value is None else str(value)


def _label(row: dict) -> str:
    return f"{row['optimizer']} (lr {fmt(row['lr'])}, batch {row['batch_size']})"


def observations(table: Sequence[dict]) -> dict[str, str]:
    """Question -> a paragraph of measured observations."""
    ok = [r for r in table if r["status"] == "ok"]
    notes: dict[str, str] = {}
    sizes = sorted({r["batch_size"] for r in table})
    optimizers = list(dict.fromkeys(r["optimizer"] for r in table))
    if len(optimizers) > 1 and ok:
        common = max(sizes, key=lambda b: sum(r["batch_size"] == b for r in ok))
        rows = sorted((r for r in ok if r["batch_size"] == common),
                      key=lambda r: -r["final_val_acc"])
        best, worst = rows[0], rows[-1]
        fastest = min(rows, key=lambda r: r["seconds_per_epoch"])
        text = (f"At batch {common}, {_label(best)} ended with the highest validation accuracy, "
                f"{best['final_val_acc']:.2f}% (test {best['test_acc']:.2f}%), and "
                f"{_label(worst)} with the lowest, {worst['final_val_acc']:.2f}%. ")
        text += ", ".join(f"{r['optimizer']} {r['final_val_acc']:.2f}%" for r in rows) + ". "
        early = [r for r in rows if r["best_epoch"] is not None
                 and r["best_epoch"] < max(rr["best_epoch"] or 0 for rr in rows)]
        if early:
            text += ("Validation loss was lowest before the last epoch for "
                     + ", ".join(f"{r['optimizer']} (epoch {r['best_epoch']})" for r in early)
                     + ". ")
        if len({r["seconds_per_epoch"] for r in rows}) == 1 and len(rows) > 1:
            # one batch of K: the seconds are the batch's, no run was cheaper than another
            text += (f"They trained together as one batch of {len(rows)} models, "
                     f"{fastest['seconds_per_epoch']:.3f} s per epoch for all of them.")
        else:
            text += (f"The cheapest epoch was {fastest['optimizer']}'s, "
                     f"{fastest['seconds_per_epoch']:.3f} s.")
        subs = [r for r in rows if math.isfinite(r["suboptimality"])]
        if subs:
            closest = min(subs, key=lambda r: r["suboptimality"])
            text += (f" Closest to the optimum of the convex problem: {closest['optimizer']}, "
                     f"f - f* = {closest['suboptimality']:.2e}.")
        notes["How do the optimisers compare?"] = text
    if len(sizes) > 1:
        parts = []
        for optimizer in optimizers:
            rows = [r for r in ok if r["optimizer"] == optimizer]
            by_size = {r["batch_size"]: r for r in rows}
            if len(by_size) < 2:
                continue
            lo, hi = by_size[min(by_size)], by_size[max(by_size)]
            speed = lo["seconds_per_epoch"] / max(hi["seconds_per_epoch"], 1e-12)
            parts.append(
                f"{optimizer}: from batch {lo['batch_size']} to {hi['batch_size']} the final "
                f"validation accuracy went from {lo['final_val_acc']:.2f}% to "
                f"{hi['final_val_acc']:.2f}% and the validation loss from "
                f"{lo['final_val_loss']:.4f} to {hi['final_val_loss']:.4f}, while an epoch went "
                f"from {lo['seconds_per_epoch']:.3f} s to {hi['seconds_per_epoch']:.3f} s "
                f"({speed:.1f}x {'faster' if speed >= 1 else 'slower'}).")
        if parts:
            notes["What changes with the batch size?"] = " ".join(parts)
    lrs = sorted({r["lr"] for r in table})
    if len(lrs) > 1 and ok:
        best = min(ok, key=lambda r: r["final_val_loss"])
        notes["Which configuration is best?"] = (
            f"By final validation loss, the best run is {best['run']}: {_label(best)}, "
            f"seed {best['seed']}, validation loss {best['final_val_loss']:.4f}, "
            f"accuracy {best['final_val_acc']:.2f}%.")
    if any(r.get("f_star_attained") is False for r in table):
        notes["What does f - f* mean here?"] = (
            "At weight decay 0 the problem has no minimiser (a few pixels are lit in one "
            "class only, so f keeps falling as their weights grow): the column shows f - "
            "f_best, where f_best is the lowest value the solver reached, an upper bound on "
            "the infimum. A negative value means the run went below that bound.")
    decoupled = sorted({r["optimizer"] for r in table if r.get("decoupled_decay")})
    if decoupled:
        notes["Why is f - f* empty for some runs?"] = (
            f"{', '.join(decoupled)} decay the weights directly (w <- (1 - lr wd) w, "
            "decoupled from the gradient), so they do not minimise f + (wd/2)|w|^2 and no "
            "f* measures their progress; their f - f* column is left empty (it is filled "
            "when their weight decay is 0).")
    diverged = [r for r in table if r["status"] != "ok"]
    if diverged:
        notes["Which runs diverged?"] = (
            ", ".join(_label(r) for r in diverged)
            + " diverged (a NaN/inf loss or one over 100x the zero model's); their curves "
              "end in an x.")
    return notes


def _headers(table: Sequence[dict]) -> list[str]:
    kinds = {r.get("f_star_attained") for r in table} - {None}
    sub = "f - f_best (upper bound)" if kinds == {False} else (
        "f - f* (or f - f_best)" if kinds == {True, False} else "f - f*")
    return [sub if k == "suboptimality" else h for k, h in TABLE_COLUMNS]


def markdown(table: Sequence[dict], figures: Sequence[str], title: str,
             extra: dict[str, str] | None = None) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(_headers(table)) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[k]) for k, _ in TABLE_COLUMNS) + " |" for r in table]
    for question, text in {**observations(table), **(extra or {})}.items():
        lines += ["", f"## {question}", "", text]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def html_page(table: Sequence[dict], figures: Sequence[str], title: str,
              extra: dict[str, str] | None = None) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in _headers(table))
    body = "".join("<tr>" + "".join(f"<td>{e(fmt(r[k]))}</td>" for k, _ in TABLE_COLUMNS)
                   + "</tr>" for r in table)
    notes = "".join(f"<h2>{e(q)}</h2><p>{e(t)}</p>"
                    for q, t in {**observations(table), **(extra or {})}.items())
    imgs = "".join(f'<figure><img src="{e(f)}" alt="{e(f)}"><figcaption>{e(f)}</figcaption>'
                   "</figure>" for f in figures)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{style}</style></head><body><h1>{e(title)}</h1><table><tr>{head}</tr>"
            f"{body}</table>{notes}{imgs}</body></html>\n")


def write_report(out: Path, table: Sequence[dict], figures: Sequence[str], title: str,
                 extra: dict[str, str] | None = None) -> None:
    """report.md and report.html; ``extra`` adds paragraphs (question -> text)."""
    write_text(out / "report.md", markdown(table, figures, title, extra))
    write_text(out / "report.html", html_page(table, figures, title, extra))
