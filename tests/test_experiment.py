"""The experiment layer: the grid and its refusals, resume that cannot mix data, a write
that fails ending in one line with every earlier file intact, and seeds in one batch."""

import csv
import errno

import pytest
from conftest import fail_renames_to, write_idx_set

from stochopt.cli import main
from stochopt.config import Config
from stochopt.errors import SettingError, StochoptError
from stochopt.study import experiment, folder, plan

TINY = ["--optimizers", "sgd,adam", "--batch-size", "4000", "--epochs", "1", "--quiet",
        "--optimum", "skip", "--seeds", "0"]
# two groups, one per batch size, on scikit-learn's digits: a second, where MNIST's took
# four (its gradient noise scale, measured with several batch sizes, is a pass over 48,000 rows)
TWO_SIZES = [*TINY, "--batch-sizes", "200,400", "--dataset", "digits"]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_other_dtype_into_the_same_folder_is_refused_and_changes_nothing(
        tmp_path, data_dir, capsys):
    out = tmp_path / "c"
    assert main(["compare", *TINY, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    before = _snapshot(out)
    code, err = _err(capsys, ["compare", *TINY, "--dtype", "float64", "--data-dir",
                              str(data_dir), "--out", str(out)])
    assert code == 2 and err.count("\n") == 1
    assert "another dtype (float32 there, float64 now)" in err and "another output folder" in err
    assert _snapshot(out) == before
    # the same command as the first resumes: nothing to train, same files
    assert main(["compare", *TINY, "--data-dir", str(data_dir), "--out", str(out)]) == 0


def test_another_data_set_into_the_same_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    first = write_idx_set(tmp_path / "a", seed=0)
    other = write_idx_set(tmp_path / "b", seed=1)  # same layout, other pixels
    out = tmp_path / "c"
    argv = ["compare", "--optimizers", "sgd", "--batch-size", "16", "--epochs", "1",
            "--quiet", "--optimum", "skip", "--dataset", "idx", "--out", str(out)]
    assert main([*argv, "--data-dir", str(first)]) == 0
    before = _snapshot(out)
    code, err = _err(capsys, [*argv, "--data-dir", str(other)])
    assert code == 2 and "another data (checksums of the data files)" in err
    assert _snapshot(out) == before


def test_a_folder_of_runs_without_a_fingerprint_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "old"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "sgd-lr0.1-bs64-s0-00000000.json").write_text("{}")
    code, err = _err(capsys, ["compare", *TINY, "--data-dir", str(data_dir), "--out",
                              str(out)])
    assert code == 2 and "without a fingerprint.json" in err


def test_the_fingerprint_names_data_split_dtype_device_and_code(split):
    f = folder.fingerprint(split)
    assert f["md5"]["train_images"] and f["val_fraction"] == 0.2 and f["split_seed"] == 2000
    assert (f["dtype"], f["device"], f["bias"]) == ("float32", "cpu", False)
    assert f["numerics"] == folder.NUMERICS_VERSION


def test_duplicate_configurations_are_refused_before_the_lock(tmp_path, data_dir, capsys):
    out = tmp_path / "d"
    code, err = _err(capsys, ["sweep", "--optimizer", "adam", "--lr", "0.1,0.1", "--quiet",
                              "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 2 and err.count("\n") == 1 and "is listed twice" in err
    assert not out.exists()
    with pytest.raises(StochoptError, match="listed twice"):
        plan.grid(["adam"], {"lr": [1e-3, None]})  # None is adam's default, 1e-3


def test_a_flag_that_applies_to_none_of_the_optimizers_is_refused(tmp_path, data_dir, capsys):
    code, err = _err(capsys, ["compare", "--optimizers", "sgd,adam", "--momentum", "0.5",
                              "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    assert code == 2 and err.count("\n") == 1
    assert "--momentum does not apply to --optimizer sgd, adam" in err
    assert "hyperparameter of momentum, nesterov, rmsprop" in err
    assert not (tmp_path / "o").exists()


def test_a_flag_that_applies_to_some_is_applied_to_those_and_named(tmp_path, data_dir, capsys):
    out = tmp_path / "o"
    code, err = _err(capsys, ["compare", "--optimizers", "momentum,adam", "--momentum", "0.5",
                              "--batch-size", "4000", "--epochs", "1", "--quiet", "--optimum",
                              "skip", "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 0
    assert err == "stochopt: note: --momentum applies to momentum only, not to adam\n"
    rows = {r["optimizer"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["momentum"]["momentum"] == "0.5" and rows["adam"]["momentum"] == ""


def test_a_failed_write_ends_in_one_line_and_earlier_files_stay_intact(
        tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "full"
    argv = ["compare", *TINY, "--data-dir", str(data_dir), "--out", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    fail_renames_to(monkeypatch, "summary.csv", errno.ENOSPC, "No space left on device")
    code, err = _err(capsys, argv)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {out / 'summary.csv'}: No space left on device" in err
    after = _snapshot(out)
    assert after[out.joinpath("summary.csv").relative_to(out)] == before[
        out.joinpath("summary.csv").relative_to(out)]
    assert not [p for p in after if p.name.endswith(".tmp")]  # the temporary file is gone
    assert list(csv.DictReader((out / "results.csv").open()))  # rewritten before, complete


def test_a_failed_write_in_a_fresh_folder_leaves_the_finished_run_files(
        tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "fresh"
    fail_renames_to(monkeypatch, "results.csv", errno.EROFS, "Read-only file system")
    code, err = _err(capsys, ["compare", *TINY, "--data-dir", str(data_dir), "--out",
                              str(out)])
    assert code == 2 and "cannot write" in err and "results.csv" in err
    assert not (out / "results.csv").exists()
    assert len(list((out / "runs").glob("*.json"))) == 2  # the runs themselves are kept


@pytest.mark.parametrize("figure", ["curves.png", "weights_adam.png"])  # drawn here; by the
def test_a_failed_figure_ends_in_one_line_and_leaves_no_temporary_file(  # forked child
        tmp_path, data_dir, capsys, monkeypatch, figure):
    out = tmp_path / "o"
    fail_renames_to(monkeypatch, figure, errno.ENOSPC, "No space left on device")
    code, err = _err(capsys, ["compare", *TINY, "--data-dir", str(data_dir), "--out",
                              str(out)])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {out / figure}: No space left on device" in err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / figure).exists() and (out / "summary.csv").is_file()


def test_library_messages_name_settings():
    with pytest.raises(SettingError, match=r"^step_size must be at least 1, got 0$"):
        Config(schedule="step", step_size=0).validate()
    with pytest.raises(SettingError, match=r"^warmup_epochs must be finite and >= 0"):
        Config(warmup_epochs=-1.0).validate()
    with pytest.raises(SettingError, match=r"lr_decay of the cosine schedule .* must be in "
                                           r"\[0, 1\], got 3.0"):
        Config(schedule="cosine", lr_decay=3.0).validate()
    with pytest.raises(SettingError, match="lr_decay does not apply to the constant schedule"):
        Config(schedule="constant", lr_decay=0.5).validate()


def test_a_group_that_raises_fails_alone_and_trains_when_run_again(tmp_path, capsys,
                                                                   monkeypatch):
    """The local engine as the Ray one: a group's error is one line naming its
    configurations; its runs are 'failed' rows of results.csv, not stored; the others
    finish; exit code 1; the same command again trains only the failed group."""
    real = experiment.fit

    def flaky(configs, *args, **kwargs):
        if configs[0].batch_size == 400:
            raise RuntimeError("out of\nmemory")
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(experiment, "fit", flaky)
    out = tmp_path / "out"
    argv = ["compare", *TWO_SIZES, "--out", str(out)]
    code, err = _err(capsys, argv)
    assert code == 1
    (line,) = [x for x in err.splitlines() if "out of memory" in x]
    assert "a group of 2 run(s): optimizer sgd/adam, lr 0.1/0.001, batch size 400, seed 0 " \
        "failed (RuntimeError: out of memory)" in line
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["batch_size"] for r in failed} == {"400"} and len(failed) == 2
    assert all(r["epoch"] == "" and r["val_acc"] == "" for r in failed)
    assert {r["batch_size"] for r in rows if r["status"] == "ok"} == {"200"}
    assert len(list((out / "runs").glob("*.json"))) == 2
    with open(out / "tasks.csv") as f:
        tasks = list(csv.DictReader(f))
    assert [t["status"] for t in tasks] == ["trained", "failed"]
    assert "RuntimeError: out of memory" in tasks[1]["error"]

    monkeypatch.setattr(experiment, "fit", real)
    code, err = _err(capsys, argv)
    assert code == 0 and "error" not in err
    with open(out / "tasks.csv") as f:
        assert [t["status"] for t in csv.DictReader(f)] == ["kept", "trained"]
    with open(out / "results.csv") as f:
        assert {r["status"] for r in csv.DictReader(f)} == {"ok"}


def test_when_every_group_fails_results_csv_lists_them_and_the_exit_code_is_1(
        tmp_path, data_dir, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise StochoptError("broken")

    monkeypatch.setattr(experiment, "fit", broken)
    out = tmp_path / "out"
    code, err = _err(capsys, ["compare", *TINY, "--data-dir", str(data_dir), "--out",
                              str(out)])
    assert code == 1 and "2 run(s) in 1 group(s) failed" in err and "Traceback" not in err
    with open(out / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["failed", "failed"]
    assert not (out / "report.html").exists()
    log = (out / "failures.log").read_text()  # the line in tasks.csv, the traceback here
    assert "Traceback" in log and "StochoptError: broken" in log and "in broken" in log


def test_a_bug_in_a_group_is_not_reduced_to_a_line(tmp_path, monkeypatch):
    """Only the project's own errors and running out of memory are summarised per group;
    a programming error propagates with its traceback, and the groups finished before it
    stay stored."""
    real = experiment.fit

    def buggy(configs, *args, **kwargs):
        if configs[0].batch_size == 400:
            raise TypeError("must be real number, not NoneType")
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(experiment, "fit", buggy)
    out = tmp_path / "out"
    with pytest.raises(TypeError, match="must be real number"):
        main(["compare", *TWO_SIZES, "--out", str(out)])
    assert len(list((out / "runs").glob("*.json"))) == 2  # batch 200's runs: kept
    assert experiment.known_failure(RuntimeError("CUDA out of\nmemory. Tried to allocate"))
    assert experiment.known_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                                 "DefaultCPUAllocator: can't allocate memory"))
    assert not experiment.known_failure(RuntimeError("shape mismatch"))


def test_no_noise_scale_turns_off_the_default_with_several_batch_sizes(tmp_path):
    out = tmp_path / "out"
    argv = ["compare", *TWO_SIZES]
    assert main([*argv, "--out", str(out / "on")]) == 0
    assert main([*argv, "--no-noise-scale", "--out", str(out / "off")]) == 0
    for name, measured in (("on", True), ("off", False)):
        with open(out / name / "results.csv") as f:
            cells = {r["noise_scale"] != "" for r in csv.DictReader(f)}
        assert cells == {measured}
