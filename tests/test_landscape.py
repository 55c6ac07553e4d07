"""The optimisers on 2-D landscapes: the same rule classes, the functions' hand-written
gradients against autograd, the rates theory predicts on the quadratic, every rule's
documented convergence, and the command's three files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stochopt import landscape
from stochopt.cli import main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "landscapes.md"


@pytest.mark.parametrize("name", landscape.FUNCTIONS)
def test_hand_written_gradients_equal_autograd(name):
    fn = landscape.function(name, condition=7.0)
    v = (torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
         * 4 - 2).requires_grad_()
    (auto,) = torch.autograd.grad(fn.f(v).sum(), v)
    assert torch.allclose(fn.grad(v.detach()), auto, rtol=1e-10, atol=1e-10)
    for m in fn.minima:  # the listed minima are stationary points at f*
        at = torch.tensor(m, dtype=torch.float64)
        assert float(fn.f(at)) == pytest.approx(fn.f_star, abs=1e-9)
        assert float(fn.grad(at).abs().max()) < 1e-4


def test_heavy_ball_at_polyaks_parameters_contracts_at_the_theoretical_rate():
    """On f = (x^2 + K y^2)/2, heavy ball with lr 4/(sqrt(L)+sqrt(mu))^2 and momentum
    ((sqrt(K)-1)/(sqrt(K)+1))^2 contracts |x - x*| by (sqrt(K)-1)/(sqrt(K)+1) per step."""
    K = 100.0
    lr, mu, rate = landscape.polyak(K, 1.0)
    assert rate == pytest.approx((math.sqrt(K) - 1) / (math.sqrt(K) + 1))
    fn = landscape.function("quadratic", condition=K)
    p = landscape.optimize(fn, "momentum", lr=lr, steps=400, momentum=mu)
    dist = np.linalg.norm(p.points, axis=1)
    measured = (dist[400] / dist[200]) ** (1 / 200)
    assert measured == pytest.approx(rate, rel=0.05)
    gd = landscape.optimize(fn, "sgd", lr=2 / (K + 1), steps=400)
    measured_gd = (np.linalg.norm(gd.points[400]) / np.linalg.norm(gd.points[200])) ** (1 / 200)
    assert measured_gd == pytest.approx((K - 1) / (K + 1), rel=0.05)


def test_every_rule_reaches_the_quadratics_optimum_as_the_docs_document():
    table = landscape.convergence_table()
    assert table in PAGE.read_text(), "docs/landscapes.md's convergence table is stale"
    # three cells a row: a "|" inside a cell would split it on the rendered page
    assert all(line.count("|") == 4 for line in table.splitlines())
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip()
            for line in table.splitlines()[2:]}
    assert set(rows) == set(landscape.RULES)
    fn = landscape.function("quadratic")
    for name, steps in rows.items():
        path = landscape.optimize(fn, name)
        if steps.isdigit():
            assert path.values[int(steps)] < 1e-6 <= path.values[int(steps) - 1]
        elif steps.startswith("diverges"):
            assert path.diverged and (path.values >= 1e-6).all()
        else:
            assert (path.values >= 1e-6).all() and not path.diverged
    # gradient descent at lr 1/L: y is solved in one step, x contracts by (1 - 1/K)^2 in f
    x0 = fn.start[0]
    assert int(rows["sgd"]) == math.ceil(math.log(1e-6 / (x0**2 / 2)) / math.log(0.81))


# matplotlib's first three cycle colours (tab10), the three paths' (and legend samples')
PATH_COLOURS = np.array([[0x1F, 0x77, 0xB4], [0xFF, 0x7F, 0x0E], [0x2C, 0xA0, 0x2C]])


def _the_paths_grow_in_their_colours(gif: Path) -> None:
    """The animation's frames, read back by Pillow: each path's colour is kept (within a few
    levels) and covers more of the last frame than of the first, where only the legend
    shows it."""
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 10
        im.seek(0)
        first = np.asarray(im.convert("RGB")).astype(int)
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("RGB")).astype(int)
    for colour in PATH_COLOURS:
        near = [int((np.abs(f - colour).max(-1) <= 12).sum()) for f in (first, last)]
        assert near[0] > 0 and near[1] > near[0], (gif, colour, near)


def test_the_landscape_command_writes_three_files_for_every_function(tmp_path, capsys):
    for name in landscape.FUNCTIONS:
        out = tmp_path / name
        assert main(["landscape", "--function", name, "--optimizers", "sgd,momentum,adam",
                     "--steps", "40", "--noise", "0.1", "--out", str(out)]) == 0
        for f in ("paths.png", "loss.png", "paths.gif"):
            assert (out / f).stat().st_size > 1000
        assert (out / "paths.gif").read_bytes()[:6] == b"GIF89a"
        _the_paths_grow_in_their_colours(out / "paths.gif")
    printed = capsys.readouterr().out
    assert printed.count("sgd ") >= 4 and "heavy ball at Polyak's" in printed


@pytest.mark.parametrize("flags, message", [
    (["--function", "sphere"], "invalid choice"),
    (["--optimizers", "nope"], "unknown optimizer 'nope'"),
    (["--condition", "0.5"], "--condition must be a number >= 1"),
    (["--lr", "-1"], "--lr must be a positive finite number"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_bad_landscape_flags_get_one_line(tmp_path, capsys, flags, message):
    assert main(["landscape", *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "x").exists()


def test_the_same_rule_classes_train_the_classifier_and_walk_the_landscape():
    """A rule registered now walks the landscape too (it reads the live registry, not a
    copy), and its path is its own update: sign descent moves each coordinate by lr."""
    from stochopt.optim import RULES, Rule, register
    from stochopt.settings import POSITIVE, Setting

    class SignDescent(Rule):
        name = "test-sign-descent"
        default_schedule = "constant"
        lr = Setting(0.01, POSITIVE, "step")

        def update(self, w, g, state, lr):
            w.sub_(lr * torch.sign(g))

    register(SignDescent)
    try:
        (path,) = landscape.run("rosenbrock", ["test-sign-descent"], steps=3, lr=0.01).paths
    finally:
        del RULES["test-sign-descent"]
    steps = np.diff(path.points, axis=0)
    assert path.optimizer == "test-sign-descent" and len(steps) == 3
    np.testing.assert_allclose(np.abs(steps), 0.01, rtol=1e-12)
