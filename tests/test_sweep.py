"""compare and sweep: the tidy results, resuming after an interruption, divergence, and a
report whose numbers are those of results.csv."""

import csv
import json
import math
import re
import shutil

import pytest

from stochopt.cli import main
from stochopt.study import experiment
from stochopt.train import DIVERGENCE_LOSS

COMMON = ["--epochs", "2", "--quiet", "--optimum", "skip", "--seeds", "0"]

TIMINGS = ("seconds", "batch_seconds", "elapsed")  # the clocks, which runs differ in


def _rows(path):
    return list(csv.DictReader(path.read_text().splitlines()))


def _compare(data_dir, out, *flags):
    return main(["compare", "--optimizers", "sgd,momentum,adam", "--batch-sizes", "1000,4000",
                 *COMMON, "--data-dir", str(data_dir), "--out", str(out), *flags])


@pytest.fixture(scope="module")
def compared(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert _compare(data_dir, out) == 0
    return out


def test_results_csv_schema_and_row_count(compared):
    rows = _rows(compared / "results.csv")
    assert len(rows) == 3 * 2 * 2  # optimizers x batch sizes x epochs
    required = ["run", "optimizer", "lr", "batch_size", "seed", "epoch", "steps", "grad_evals",
                "train_loss", "train_acc", "val_loss", "val_acc", "suboptimality",
                "noise_scale", "seconds", "status"]
    assert list(rows[0])[:len(required)] == required
    assert {"momentum", "beta1", "beta2", "eps", "weight_decay"} <= set(rows[0])
    assert {r["status"] for r in rows} == {"ok"}
    assert {(r["optimizer"], r["batch_size"]) for r in rows} == {
        (o, b) for o in ("sgd", "momentum", "adam") for b in ("1000", "4000")}
    adam = next(r for r in rows if r["optimizer"] == "adam")
    assert float(adam["lr"]) == 1e-3 and float(adam["beta2"]) == 0.999 and adam["momentum"] == ""


def test_optimizers_sharing_a_data_order_train_as_one_batch(compared):
    """sgd, momentum and adam at one batch size train as one batch of K: their epochs are
    the same wall-clock interval (batch_seconds), split into each run's own cost (seconds,
    summing to it), whereas the two batch sizes are two batches."""
    rows = _rows(compared / "results.csv")
    for bs in ("1000", "4000"):
        for epoch in ("1", "2"):
            mine = [r for r in rows if (r["batch_size"], r["epoch"]) == (bs, epoch)]
            assert len({r["batch_seconds"] for r in mine}) == 1
            assert sum(float(r["seconds"]) for r in mine) == pytest.approx(
                float(mine[0]["batch_seconds"]), rel=1e-9)
    assert len({r["batch_seconds"] for r in rows if r["epoch"] == "1"}) == 2
    md = (compared / "report.md").read_text()
    assert "trained together as one batch of 3 models" in md  # 3 configurations x 1 seed
    assert "each run's own cost per epoch" in md


def test_report_numbers_equal_results_csv(compared):
    rows = _rows(compared / "results.csv")
    runs = json.loads((compared / "runs.json").read_text())
    summary = {s["config"]: s for s in json.loads((compared / "summary.json").read_text())}
    md = (compared / "report.md").read_text()
    html = (compared / "report.html").read_text()
    for r in runs:  # one seed: each configuration's mean is its run's last epoch
        last = [row for row in rows if row["run"] == r["run"]][-1]
        assert r["final_val_acc"] == pytest.approx(float(last["val_acc"]))
        assert summary[r["config"]]["final_val_acc_mean"] == pytest.approx(r["final_val_acc"])
        assert f"{float(last['val_acc']):.2f}" in md and f"{float(last['val_acc']):.2f}" in html
    best = max((r for r in runs if r["batch_size"] == 1000), key=lambda r: r["final_val_acc"])
    sentence = re.search(r"At batch 1000, final validation accuracy.*?: ([\w =.]+) ([\d.]+)%", md)
    assert sentence and sentence.group(1) == best["config"]
    assert float(sentence.group(2)) == pytest.approx(best["final_val_acc"], abs=0.005)
    for fig in ("curves.png", "batch_sizes.png", "weights_adam.png"):  # for papers, README
        assert (compared / fig).is_file()
    for name in ("curves", "batch_sizes", "weights"):  # the page draws its own, from data
        assert f'data-figure="{name}"' in html or f'"{name}"' in html


def test_resume_after_interruption_reruns_nothing_finished(data_dir, compared, tmp_path,
                                                           monkeypatch):
    out = tmp_path / "resumed"
    calls = []
    real_fit = experiment.fit

    def interrupted_fit(configs, *args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt  # as Ctrl-C in the second group (one per batch size)
        calls.append(len(configs))
        return real_fit(configs, *args, **kwargs)

    monkeypatch.setattr(experiment, "fit", interrupted_fit)
    assert _compare(data_dir, out) == 130
    finished = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert len(finished) == sum(calls) == 3
    assert not (out / "results.csv").exists()
    assert not list(out.rglob("*.tmp"))  # nothing half-written

    calls.clear()
    monkeypatch.setattr(experiment, "fit", lambda configs, *a, **k: calls.append(len(configs))
                        or real_fit(configs, *a, **k))
    assert _compare(data_dir, out) == 0
    assert sum(calls) == 3  # only the runs that had not finished

    def strip(path):  # wall-clock times differ from run to run; everything else may not
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in _rows(path)]

    assert strip(out / "results.csv") == strip(compared / "results.csv")


def test_a_group_cut_short_between_its_run_files_resumes_to_the_same_numbers(
        data_dir, compared, tmp_path, monkeypatch):
    """A kill between two run files of one group leaves it part-finished. Its numbers depend
    (by rounding) on which models shared its products, so the whole group trains again;
    the finished run files stay as they were."""
    out = tmp_path / "cut"
    shutil.copytree(compared / "runs", out / "runs")
    shutil.copy(compared / "fingerprint.json", out)  # the same data: resuming is allowed
    adam = next((out / "runs").glob("adam-*-bs1000-*.json"))
    adam.unlink()
    adam.with_suffix(".npy").unlink()
    kept = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    calls = []
    real_fit = experiment.fit
    monkeypatch.setattr(experiment, "fit", lambda configs, *a, **k: calls.append(
        sorted(c.optimizer for c in configs)) or real_fit(configs, *a, **k))
    assert _compare(data_dir, out) == 0
    assert calls == [["adam", "momentum", "sgd"]]  # the cut group, whole; not the other
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")
            if p.name in kept} == kept

    def strip(path):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in _rows(path)]

    assert strip(out / "results.csv") == strip(compared / "results.csv")


def test_a_diverging_configuration_is_marked_and_the_rest_complete(data_dir, tmp_path):
    out = tmp_path / "div"
    code = main(["sweep", "--optimizer", "sgd", "--lr", "0.1,1e4", "--batch-size", "2000",
                 *COMMON, "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 0
    rows = _rows(out / "results.csv")
    bad = [r for r in rows if float(r["lr"]) == 1e4]
    good = [r for r in rows if float(r["lr"]) == 0.1]
    assert [r["status"] for r in bad] == ["diverged"] and len(good) == 2
    assert float(bad[0]["train_loss"]) > DIVERGENCE_LOSS  # marked at its first epoch
    assert all(r["status"] == "ok" for r in good) and float(good[-1]["val_acc"]) > 80
    runs = {r["lr"]: r for r in json.loads((out / "runs.json").read_text())}
    assert runs[1e4]["test_acc"] is None or math.isnan(runs[1e4]["test_acc"])
    assert "diverged" in (out / "report.md").read_text()
    assert (out / "lr_sensitivity.png").is_file()


def test_sweep_reports_the_best_configuration(data_dir, tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--optimizer", "adam", "--lr", "1e-4,1e-3,1e-2", "--seeds", "0,1",
                 "--batch-size", "2000", "--epochs", "2", "--optimum", "skip",
                 "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 0
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 6 and len(json.loads((out / "summary.json").read_text())) == 3
    mean = {lr: sum(r["final_val_loss"] for r in runs if r["lr"] == lr) / 2
            for lr in (1e-4, 1e-3, 1e-2)}
    best = min(mean, key=mean.get)
    assert f"best by mean validation loss: adam lr={best:g} " in capsys.readouterr().out


def test_a_second_process_on_the_same_out_is_refused(data_dir, tmp_path, capsys):
    from stochopt.files import lock_out, prepare_out

    out = prepare_out(tmp_path / "busy")
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from stochopt.files import lock_out; "
        f"lock_out(Path({str(out)!r})); print('locked', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["train", "--epochs", "1", "--quiet", "--optimum", "skip",
                     "--data-dir", str(data_dir), "--out", str(out)])
        assert code == 2 and "another stochopt process is writing" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    lock_out(out)  # free again once the holder is gone


def test_the_report_names_the_cheapest_epoch_only_when_runs_were_timed_apart():
    """Runs timed apart (two batches): the cheapest epoch. One batch: its wall time and each
    run's own share of it."""
    from stochopt.study.report import compare_sentences

    def row(optimizer, seconds, batch):
        stats = {f"{m}_{s}": v for m, v in (("final_val_acc", 91.0 + seconds),
                                            ("final_val_loss", 0.3), ("test_acc", 91.0))
                 for s in ("mean", "ci95_low", "ci95_high")}
        return {"config": optimizer, "optimizer": optimizer, "lr": 0.1, "batch_size": 64,
                "n_seeds": 1, **stats, "seconds_per_epoch": seconds,
                "batch_seconds_per_epoch": batch}

    apart = compare_sentences([row("sgd", 0.2, 0.2), row("adam", 0.3, 0.3)], [], None)
    assert "The cheapest epoch was sgd's, 0.200 s" in apart
    together = compare_sentences([row("sgd", 0.2, 0.5), row("adam", 0.3, 0.5)], [], None)
    assert "trained together as one batch of 2 models (2 configurations x 1 seed), 0.500 s " \
        "of wall time per epoch" in together
    assert "sgd 0.200 s, adam 0.300 s" in together and "cheapest" not in together


def test_result_files_get_the_permissions_open_gives_not_private_ones(compared):
    """Files are written through a temporary file (atomic), which mkstemp makes 0600; the
    results get 0666 less the umask, as a plain open() would give them, so that a folder
    shared with colleagues stays readable."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    files = [p for p in compared.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name
