"""The command line end to end: files written, and bad input ending in one clear line."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from stochopt.cli import main
from stochopt.errors import StochoptError

PNG = b"\x89PNG\r\n\x1a\n"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_every_file(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(capsys, "train", "--epochs", "2", "--batch-size", "512",
                             "--data-dir", str(data_dir), "--out", str(out), "--optimum", "skip")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "curves.png", "history.csv", "samples.png", "summary.json", "weights.npy", "weights.png"]
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    required = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert required <= set(rows[0])
    assert 50 < float(rows[-1]["val_acc"]) <= 100  # percent, not a fraction
    assert float(rows[1]["lr"]) == pytest.approx(0.09)
    W = np.load(out / "weights.npy")
    assert W.shape == (784, 10) and W.dtype == np.float32 and np.abs(W).max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["batch_size"] == 512 and summary["status"] == "ok"
    assert summary["final"]["val_acc"] == pytest.approx(float(rows[-1]["val_acc"]))
    assert 80 < summary["test_acc"] <= 100 and summary["versions"]["torch"] == torch.__version__
    for name in ("curves.png", "weights.png", "samples.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "epoch   2" in stdout and "test accuracy" in stdout and "epoch/s" in err  # bar on stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, data_dir):
    code, _, err = _run(capsys, "train", "--device", "cuda", "--data-dir", str(data_dir),
                        "--out", str(tmp_path / "o"))
    assert code == 2 and "CUDA is not available" in err and err.count("\n") == 1


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--data-dir", str(tmp_path / "none"),
                        "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_diverging_run_exits_nonzero_with_complete_files(tmp_path, capsys, data_dir):
    out = tmp_path / "o"
    code, _, err = _run(capsys, "train", "--optimizer", "sgd", "--lr", "1e4", "--epochs", "3",
                        "--batch-size", "4096", "--data-dir", str(data_dir), "--out", str(out),
                        "--optimum", "skip", "--quiet")
    assert code == 1 and "diverged" in err and "epoch 1" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert len(list(csv.DictReader((out / "history.csv").read_text().splitlines()))) == 1


def test_console_script_runs_and_errors_without_traceback(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "stochopt", "train", "--help"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "--batch-size" in ok.stdout and "--optimizer" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "stochopt", "train", "--lr", "-3",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


def test_a_boolean_hyperparameter_can_be_turned_on_and_off():
    """Muon's nesterov is on by default: --no-nesterov turns it off, --centered turns
    RMSprop's on; a flag left out keeps each optimiser's default."""
    from stochopt.cli import build_parser, configs_from_args

    def hyper(*argv):
        (config,) = configs_from_args(build_parser().parse_args(["train", *argv]))
        return config.resolved().hyper

    assert hyper("--optimizer", "muon")["nesterov"] is True
    assert hyper("--optimizer", "muon", "--no-nesterov")["nesterov"] is False
    assert hyper("--optimizer", "rmsprop", "--centered")["centered"] is True
    assert hyper("--optimizer", "rmsprop")["centered"] is False


def test_report_rebuilds_a_folders_tables_and_page_without_training(tmp_path, capsys):
    """stochopt report DIR: the tables, figures and page again from the stored runs alone;
    the same summary.csv, a page with its curves; a folder it cannot read is one line."""
    out = tmp_path / "c"
    assert main(["compare", "--dataset", "digits", "--optimizers", "sgd,adam", "--seeds", "0,1",
                 "--epochs", "2", "--optimum", "skip", "--quiet", "--out", str(out)]) == 0
    summary = (out / "summary.csv").read_text()
    for name in ("summary.csv", "report.html", "curves.png", "results.csv"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "summary.csv").read_text() == summary
    page = (out / "report.html").read_text()
    assert 'data-figure="curves"' in page and '"name":"adam"' in page
    assert (out / "curves.png").is_file() and (out / "plotly.min.js").is_file()
    capsys.readouterr()
    (out / "meta.json").write_text("{not json")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "meta.json is damaged" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_the_progress_page_follows_each_group_but_the_last(tmp_path, capsys, monkeypatch):
    """A running study rewrites report.html after its groups (at most every 10 s), but not
    after its last group, whose final report is written at once."""
    import stochopt.cli.study as study
    from stochopt.study import artefacts

    clock = iter(range(0, 10_000, 11))  # every reading 11 s after the one before
    monkeypatch.setattr(study.time, "monotonic", lambda: next(clock))
    pages = []
    monkeypatch.setattr(artefacts, "write_progress_page",
                        lambda out, records, *a, **k: pages.append(len(records)))
    code = main(["compare", "--dataset", "digits", "--optimizers", "sgd,adam", "--seeds", "0",
                 "--epochs", "1", "--group-size", "1", "--out", str(tmp_path / "c"),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert pages == [1]  # after the first of two groups only
    assert "running" not in (tmp_path / "c" / "report.html").read_text()


def _two_groups_stopped(tmp_path, capsys) -> tuple[int, list[str], str]:
    """A compare of two groups with its progress bar showing, stopped in the second (by
    what the test injected): its exit code and stderr, as lines and whole."""
    code = main(["compare", "--dataset", "digits", "--optimizers", "sgd,adam", "--seeds", "0",
                 "--epochs", "2", "--group-size", "1", "--optimum", "skip", "--out",
                 str(tmp_path / "c")])
    err = capsys.readouterr().err
    return code, err.replace("\r", "\n").splitlines(), err


def test_an_interrupted_commands_bar_ends_before_its_one_line(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the second of two groups: the bar is closed where it stood and the
    interruption's line stands on a line of its own, the last of stderr."""
    from stochopt.study import experiment

    real_fit, calls = experiment.fit, []

    def interrupted_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(experiment, "fit", interrupted_fit)
    code, lines, err = _two_groups_stopped(tmp_path, capsys)
    assert code == 130 and len(calls) == 2
    assert lines[-1] == ("stochopt: interrupted; finished files are complete, nothing "
                         "half-written; the same command resumes"), err
    assert "2/4" in lines[-2] and "epoch" in lines[-2]  # the bar, closed at the first group


def test_a_failed_write_mid_run_ends_the_bar_before_its_one_line(tmp_path, capsys,
                                                                monkeypatch):
    """The disk full at the second group's run file: the bar is closed where it stood and
    the error stands on a line of its own, the last of stderr."""
    from stochopt.study import experiment

    real_write, runs = experiment.write_json, []

    def full_disk(path, *args, **kwargs):
        if path.parent.name == "runs":
            runs.append(path)
            if len(runs) == 2:
                raise StochoptError(f"cannot write {path}: No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(experiment, "write_json", full_disk)
    code, lines, err = _two_groups_stopped(tmp_path, capsys)
    assert code == 2 and len(runs) == 2
    assert lines[-1] == f"stochopt: error: cannot write {runs[1]}: No space left on device", err
    assert "4/4" in lines[-2] and "epoch" in lines[-2]  # the bar, closed where it stood


@pytest.mark.parametrize("argv, expected", [
    (["compare", "--data-dir", "D"], [("D", "mnist")]),
    (["train", "--epochs", "2", "--data-dir=D", "--dataset", "idx"], [("D", "idx")]),
    (["sweep", "--lrs", "0.1,0.2"], [("ENV", "mnist")]),  # $STOCHOPT_DATA
    (["compare", "--data-dir", "D", "--help"], []),
    (["compare", "--data-dir"], []),  # the parser will say what is wrong
    (["landscape"], []), (["report", "runs/compare"], []), ([], []),
])
def test_the_command_reads_ahead_the_folder_its_flags_name(argv, expected, monkeypatch,
                                                           tmp_path):
    from stochopt import cli
    from stochopt.data import idx

    monkeypatch.setenv("STOCHOPT_DATA", str(tmp_path))
    calls = []
    monkeypatch.setattr(idx, "read_ahead", lambda d, dataset: calls.append((d, dataset)))
    cli.read_ahead(argv)
    assert calls == [(tmp_path if d == "ENV" else Path(d), s) for d, s in expected]


def test_the_commands_read_ahead_are_those_with_a_data_dir_flag():
    from stochopt import cli
    from stochopt.cli.parser import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(cli.COMMANDS) == set(commands)
    assert set(cli.READS_DATA) == {name for name, p in commands.items()
                                   if "--data-dir" in p._option_string_actions}


@pytest.mark.parametrize("thread", [False, True])
def test_the_installed_command_ends_at_once_after_its_exit_handlers_and_output(
        tmp_path, thread):
    """``stochopt`` (``cli.run``) exits with main's code once the exit handlers have run and
    stdout is flushed (no newline, a pipe: nothing written until then), and nothing after
    it runs; a live thread that is not a daemon is waited for."""
    script = tmp_path / "command.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, sys, threading, time
        from stochopt import cli
        cli.main = lambda: (print("said", end=""), 3)[1]
        atexit.register(lambda: open({str(tmp_path / "handler")!r}, "w").write("ran"))
        if {thread}:
            def late():
                time.sleep(0.5)
                open({str(tmp_path / "thread")!r}, "w").write("done")
            threading.Thread(target=late).start()
        sys.argv = ["stochopt"]
        cli.run()
        print("after")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3 and done.stdout == "said", (done.stdout, done.stderr)
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "thread").exists() == thread


@pytest.mark.parametrize("given", [None, "0"])
def test_the_command_puts_torchs_large_allocations_on_huge_pages_unless_told_not_to(
        tmp_path, given):
    """The command sets ``THP_MEM_ALLOC_ENABLE=1`` before torch allocates (unless the
    environment already says), and torch's allocator then asks for transparent huge pages:
    a 64 MB tensor made by the command lies on them where the kernel gives them on request
    (``madvise`` mode), and not when the environment says 0."""
    script = tmp_path / "command.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from stochopt import cli

        def main():
            import torch
            x = torch.ones(1 << 24)  # 64 MB, every page touched
            rollup = Path("/proc/self/smaps_rollup")
            huge = (int(rollup.read_text().split("AnonHugePages:")[1].split()[0])
                    if rollup.exists() else -1)
            print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge, float(x.sum()))
            return 0

        cli.main = main
        sys.argv = ["stochopt"]
        cli.run()
    """))
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    setting, huge_kb, total = done.stdout.split()
    assert setting == (given or "1") and float(total) == 1 << 24
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if int(huge_kb) >= 0 and mode.exists() and "[madvise]" in mode.read_text():
        assert (int(huge_kb) > 0) == (given is None), huge_kb


def test_the_console_entry_returns_mains_code_and_freezes_the_collector(monkeypatch):
    """``stochopt`` the command is ``main`` and then a frozen collector (a quicker exit);
    ``main`` alone leaves the collector as it was."""
    import gc

    import stochopt.cli as cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    gc.unfreeze()
    try:
        assert cli.console() == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_command_imports_with_the_collector_off_and_runs_with_it_on(monkeypatch):
    """The collections that importing torch sets off are skipped (they find no garbage):
    the command's modules import with the collector off, and the command runs with it on,
    what was imported frozen first. ``main`` alone leaves the collector as it is."""
    import gc
    import types

    import stochopt.cli as cli

    seen, calls = {}, []

    def command(name):
        seen["importing"] = gc.isenabled()

        def run(args):
            seen["running"] = gc.isenabled()
            return 0
        return run

    def recorded(name, then=lambda: None):
        def call():
            calls.append(name)
            then()
        return call

    # the command's calls to the collector, recorded (its freezes not done: the test
    # process's objects stay where they are)
    monkeypatch.setattr(cli, "gc", types.SimpleNamespace(
        isenabled=gc.isenabled, disable=recorded("disable", gc.disable),
        enable=recorded("enable", gc.enable), freeze=recorded("freeze")))
    monkeypatch.setattr(cli, "command", command)
    monkeypatch.setattr(cli, "read_ahead", lambda argv: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.sys, "argv", ["stochopt", "optimum"])
    try:
        assert cli.console() == 0
        assert seen == {"importing": False, "running": True} and gc.isenabled()
        # frozen before it is back on; frozen again on the way out (a quicker exit)
        assert calls == ["disable", "freeze", "enable", "freeze"]
        calls.clear()
        assert cli.main(["optimum"]) == 0  # main alone: on throughout, nothing frozen
        assert seen == {"importing": True, "running": True} and calls == []
        # a command that ends before its modules are in (a bad flag) leaves it on too
        monkeypatch.setattr(cli.sys, "argv", ["stochopt", "optimum", "--no-such-flag"])
        assert cli.console() == 2 and gc.isenabled()
        assert calls == ["disable", "freeze", "enable", "freeze"]
    finally:
        gc.enable()
