"""The fault suite: every data fault and flag fault ends in one line on stderr naming the
problem, exit code 2 and no traceback, for every command; SIGINT and SIGKILL in the middle
of a compare leave only complete files, and the same command then finishes the rest."""

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import idx_bytes, write_idx_set

from stochopt.cli import main
from stochopt.data import FILES

COMMANDS = {
    "train": ["train", "--epochs", "1"],
    "compare": ["compare", "--epochs", "1"],
    "sweep": ["sweep", "--epochs", "1"],
    "optimum": ["optimum"],
}


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("stochopt: error:"), err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- data faults


def _truncated_gz(d):
    p = d / f"{FILES['train_images']}.gz"
    p.write_bytes(p.read_bytes()[:300])
    return p.name


def _not_gzip(d):
    p = d / f"{FILES['train_labels']}.gz"
    p.write_bytes(gzip.decompress(p.read_bytes()))  # plain bytes behind a .gz name
    return p.name


def _bad_magic(d):
    p = d / f"{FILES['test_images']}.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[3] = 7
    p.write_bytes(gzip.compress(bytes(raw)))
    return p.name


def _dims(d):
    (d / f"{FILES['test_images']}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 32, 32)))))
    return FILES["test_images"]


def _size_mismatch(d):
    p = d / f"{FILES['test_labels']}.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()) + b"\x01\x02"))
    return p.name


def _count_mismatch(d):
    (d / f"{FILES['test_labels']}.gz").write_bytes(gzip.compress(idx_bytes(np.arange(19) % 10)))
    return "test labels"


def _label_range(d):
    labels = np.arange(60) % 10
    labels[0] = 200
    (d / f"{FILES['train_labels']}.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return FILES["train_labels"]


DATA_FAULTS = {"truncated gz": _truncated_gz, "not gzip": _not_gzip, "bad magic": _bad_magic,
               "not 28x28": _dims, "size mismatch": _size_mismatch,
               "count mismatch": _count_mismatch, "label range": _label_range}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_data_faults_in_every_command(tmp_path, capsys, command, fault):
    d = write_idx_set(tmp_path / "data")
    named = DATA_FAULTS[fault](d)
    err = _one_line_error(capsys, [*COMMANDS[command], "--dataset", "idx", "--data-dir", str(d),
                                   "--out", str(tmp_path / "out")])
    assert named in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stem", list(FILES.values()))
def test_each_missing_file_is_named(tmp_path, capsys, stem):
    d = write_idx_set(tmp_path / "data")
    (d / f"{stem}.gz").unlink()
    err = _one_line_error(capsys, ["train", "--dataset", "idx", "--data-dir", str(d)])
    assert stem in err and "not found" in err


def test_md5_mismatch_names_the_file_and_the_way_out(tmp_path, capsys):
    d = write_idx_set(tmp_path / "data")
    err = _one_line_error(capsys, ["train", "--data-dir", str(d)])
    assert "checksum" in err and "--dataset idx" in err


# --------------------------------------------------------------------------- flag faults

FLAG_FAULTS = [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch-size", "-1"], "--batch-size must be at least 1"),
    (["--batch-size", "x"], "--batch-size must be an integer"),
    (["--batch-size", "3.5"], "--batch-size must be an integer"),
    (["--batch-size", "100000"], "larger than the 48000 training examples"),
    (["--lr", "0"], "--lr must be a positive finite number"),
    (["--lr", "-0.1"], "--lr must be a positive finite number"),
    (["--lr", "nan"], "--lr must be a number"),
    (["--lr", "inf"], "--lr must be a positive finite number"),
    (["--momentum", "1"], "--momentum must be in [0, 1)"),
    (["--momentum", "-0.5"], "--momentum must be in [0, 1)"),
    (["--optimizer", "adam", "--beta2", "-0.1"], "--beta2 must be in [0, 1)"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--optimizer", "not-an-optimizer"],
     "unknown optimizer 'not-an-optimizer'; choose one of sgd, momentum"),
    (["--schedule", "saw"], "unknown schedule 'saw'; choose one of constant"),
    (["--optimizer", "sgd", "--beta2", "0.9"], "--beta2 does not apply to --optimizer sgd"),
    (["--optimizer", "sgd", "--beta1", "0.9"], "--beta1 does not apply to --optimizer sgd"),
    (["--device", "cuda:99" if not __import__("torch").cuda.is_available() else "tpu"], "device"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--dtype", "float16"], "invalid choice"),
    (["--schedule", "step", "--step-size", "0"], "--step-size must be at least 1"),
    (["--step-size", "-1"], "--step-size must be at least 1"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be finite and >= 0"),
    (["--schedule", "cosine", "--lr-decay", "3"], "--lr-decay of the cosine schedule"),
    (["--schedule", "constant", "--lr-decay", "0.5"], "--lr-decay does not apply"),
    (["--seed", "-1"], "--seed must be in [0,"),
]


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
@pytest.mark.parametrize(("flags", "message"), FLAG_FAULTS,
                         ids=[" ".join(f) for f, _ in FLAG_FAULTS])
def test_flag_faults_in_every_command(tmp_path, capsys, data_dir, command, flags, message):
    argv = [*COMMANDS[command], *flags, "--data-dir", str(data_dir), "--out",
            str(tmp_path / "out"), "--quiet"]
    if command == "compare" and "--optimizer" not in flags:
        argv += ["--optimizers", "momentum"]
    err = _one_line_error(capsys, argv)
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["compare", "--bogus"], "unrecognized arguments: --bogus (see stochopt compare --help)"),
    (["train", "--optimizer", "sgd", "--lrr", "1"],
     "unrecognized arguments: --lrr 1 (see stochopt train --help)"),
    (["compare", "--lr", "x"], "--lr must be a number, got 'x' (see stochopt compare --help)"),
    (["nope"], "invalid choice: 'nope'"),
    (["--bogus"], "(see stochopt --help)"),
])
def test_parser_errors_name_the_command_whose_help_to_read(capsys, argv, message):
    """argparse's own errors: one line, stochopt's prefix once, and the --help that lists
    the flags (a subcommand's unknown flag is the subcommand's, not the top parser's)."""
    err = _one_line_error(capsys, argv)
    assert message in err
    assert err.count("stochopt") == err.count("(see stochopt") + 1, err


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_optimum_weight_decay_faults(tmp_path, capsys, data_dir, value):
    err = _one_line_error(capsys, ["optimum", "--weight-decay", value, "--data-dir",
                                   str(data_dir)])
    assert "--weight-decay" in err


def test_out_that_is_a_file_in_every_command(tmp_path, capsys, data_dir):
    target = tmp_path / "f"
    target.write_text("x")
    for command in ("train", "compare", "sweep"):
        err = _one_line_error(capsys, [*COMMANDS[command], "--data-dir", str(data_dir),
                                       "--out", str(target), "--quiet"])
        assert "is a file" in err and target.read_text() == "x"


# --------------------------------------------------------------------------- interruptions

# two batch sizes: two groups (one batch of K each); the second, at batch 200, is slow enough
# for the kill sent when the first group's files appear to land before it ends
CMD = ["compare", "--optimizers", "sgd,adam", "--batch-sizes", "3000,200", "--epochs", "3",
       "--seeds", "0", "--quiet", "--optimum", "skip"]


def _rows_without_time(path):
    rows = list(csv.DictReader(path.read_text().splitlines()))
    timings = ("seconds", "batch_seconds", "elapsed")
    return [{k: v for k, v in r.items() if k not in timings} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert main([*CMD, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


# SIGKILL, the hardest stop, and SIGTERM, what kill, a scheduler's time limit and docker
# stop send (Ctrl-C's exit code 130 and clean files are test_sweep's in-process interruption)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_compare_resumes_to_the_same_results(data_dir, tmp_path, uninterrupted, sig):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "stochopt", *CMD, "--data-dir", str(data_dir), "--out",
            str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "runs").glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    finished = list((out / "runs").glob("*.json"))
    assert 1 <= len(finished) < 4, "the kill must land between the first and the last run"
    if sig == signal.SIGTERM:  # the command's own ending: one line, as Ctrl-C's
        assert proc.returncode == 143 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == (
            "stochopt: terminated; finished files are complete, nothing half-written; the "
            "same command resumes"), err
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for p in finished:  # every run file there is complete; a kill mid-write leaves a .tmp
        assert json.loads(p.read_text())["history"] and p.with_suffix(".npy").is_file()
    assert not (out / "results.csv").exists()

    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                             env={**os.environ})
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # stale temps swept
    assert _rows_without_time(out / "results.csv") == _rows_without_time(
        uninterrupted / "results.csv")
