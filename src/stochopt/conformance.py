"""The conformance kit: what every update rule must do, checked from its declaration alone
(scikit-learn's ``check_estimator`` idea). ``tests/test_conformance.py`` runs it over the
registry, so a rule added tomorrow is checked without anyone writing a test:

    for check in checks("my-rule"):
        check(split)          # raises AssertionError (or the rule's own error) naming it

- ``matches_reference``: equal to its declared :class:`~stochopt.optim.base.Reference`
  over 30 MNIST mini-batch steps of 64 (the reference stepping on autograd's gradient of
  the same batches), float32 to 1e-6 and float64 to 1e-12, at the defaults and at one
  non-default value of each setting, both the weights it trains and those it answers with
  (on the images' centre, :func:`crop`, where the reference declares ``features``);
- ``per_configuration_tensors``: every float setting given as per-configuration tensors in
  one batch of three equals the three runs alone;
- ``batch_beside_another_rule``: inside a batch of four (two seeds, beside another rule),
  each run equals itself alone;
- ``ranges_refused``: a value outside a setting's declared range (or of the wrong type) is
  refused when the rule is constructed;
- ``table_row``: its row of the docs' table is read off its declaration.

The batch checks run 10 steps of batch 32 on the split given, in float64 (the comparisons
are then exact to 1e-10, not float32's last digits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from .config import Config
from .data import epoch_order
from .errors import StochoptError
from .model import seed_batch_gradient
from .optim import RULES, get_rule, markdown_table
from .optim.base import Reference
from .settings import Interval, Setting
from .train import fit

STEPS, BATCH = 10, 32
TOL = 1e-10
REFERENCE_STEPS, REFERENCE_BATCH = 30, 64
REFERENCE_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _small(split: Any, name: str) -> Any:
    """The first mini-batches of the training part, in float64: one epoch is STEPS steps
    (the images cropped as the rule's reference declares)."""
    n = STEPS * BATCH
    ref = get_rule(name).reference
    features = ref.features if isinstance(ref, Reference) else 0
    as64 = {f"X_{p}": crop(getattr(split, f"X_{p}")[:n], features).double()
            for p in ("train", "val", "test")}
    ys = {f"y_{p}": getattr(split, f"y_{p}")[:n] for p in ("train", "val", "test")}
    return replace(split, **as64, **ys, sample_weight=None)


def crop(X: torch.Tensor, features: int) -> torch.Tensor:
    """The centred ``sqrt(features)``-pixel square of square images (the first ``features``
    columns of other data); ``features`` 0 or at least X's: X as it is."""
    d = X.shape[1]
    if not features or features >= d:
        return X
    side, keep = math.isqrt(d), math.isqrt(features)
    if side * side != d:
        return X[:, :features]
    start = (side - keep) // 2
    rows = torch.arange(start, start + keep)
    return X[:, (rows[:, None] * side + rows[None, :]).flatten()]


def reference_data(split: Any, dtype: torch.dtype, steps: int = REFERENCE_STEPS,
                   features: int = 0) -> Any:
    """What a rule and its reference train on: the first ``steps`` mini-batches of
    REFERENCE_BATCH, 64 validation and test examples, in ``dtype``, unweighted, the images
    cropped to their centre (:func:`crop`) when ``features``."""
    n = steps * REFERENCE_BATCH
    return replace(split, X_train=crop(split.X_train[:n], features).to(dtype),
                   y_train=split.y_train[:n], X_val=crop(split.X_val[:64], features).to(dtype),
                   y_val=split.y_val[:64], X_test=crop(split.X_test[:64], features).to(dtype),
                   y_test=split.y_test[:64], sample_weight=None)


def _config(name: str, **values: Any) -> Config:
    settings = {k: values.pop(k) for k in ("lr", "seed") if k in values}
    return Config(name, epochs=1, batch_size=BATCH, hyper=values, **settings)


def other_value(setting: Setting) -> Any | None:
    """A value inside the declared range other than the default (None: no such value)."""
    d, c = setting.default, setting.constraint
    if not isinstance(d, float) or (isinstance(c, Interval) and c.integer):
        return None
    candidates = [d * 0.5, d * 0.9, d * 1.1, 1e-3, 0.5] if d else [1e-3, 1e-2, 0.5]
    for v in candidates:
        if v != d and (c is None or v in c):
            return v
    return None


def checked_value(setting: Setting, reference: Reference) -> Any | None:
    """The non-default value a setting is checked against its reference at: the
    declaration's own choice, else a float from :func:`other_value`, a flipped flag, or the
    next whole number in range (None: not checked, or no such value)."""
    name, d = setting.name, setting.default
    if name in reference.unchecked:
        return None
    if name in reference.values:
        return reference.values[name]
    if isinstance(d, bool):
        return not d
    if isinstance(d, int) and isinstance(setting.constraint, Interval):
        return next((v for v in (d + 1, d - 1) if v in setting.constraint), None)
    return other_value(setting)


def _loop_gradient(W: torch.Tensor, Xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The mini-batch gradient as the training loop computes it (its batched products, one
    model), bit for bit: a native rule's reference steps on it, so that what is compared
    is the rules' arithmetic, not the last digits of two ways of taking the gradient, which
    a normalising or sign-taking rule amplifies past 1e-6 (Rprop: 0.66; D-Adaptation's
    Adam in float64: 6e-8) within 30 steps."""
    Wt = W.detach().mT.contiguous()[None, None]  # the loop's (S, M, C, d)
    return seed_batch_gradient(Wt, Xb[None], yb[None])[0, 0].mT


def _reference_run(rule: type, values: dict[str, Any], data: Any, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The declared reference on the batches the loop draws for ``seed``: W (d, C) a leaf
    from zero, each batch's gradient in W.grad, ``opt.step()``: the loop's own gradient
    for a native rule (see :func:`_loop_gradient`; autograd's is checked against it in
    tests/test_model.py), autograd's for a plug-in, as a user's plain loop. Returns the
    weights it trained and the ones it answers with."""
    ref: Reference = rule.reference
    settings = {n: s.default for n, s in rule.settings().items()} | values
    wd = settings.pop("weight_decay") if ref.l2_in_loss else 0.0
    X, y = data.X_train, data.y_train
    W = torch.zeros(X.shape[1], int(y.max()) + 1, dtype=X.dtype, requires_grad=True)
    known = {"X": X, "y": y, "batch_size": REFERENCE_BATCH} if ref.data else {}
    if ref.total_steps:
        known["total_steps"] = math.ceil(len(X) / REFERENCE_BATCH)
    previous = torch.get_default_dtype()
    if not rule.plugin:  # torch keeps scalar state in the default dtype: the natives' step
        # counts and products are those of a reference run with float64 as the default (a
        # plug-in's, those of a plain loop that leaves the default alone, as the harness)
        torch.set_default_dtype(X.dtype)
    try:
        torch.manual_seed(seed)  # random probes, as the loop seeds them with the run's seed
        opt = ref.make([W], **settings, **known)
        for idx in epoch_order(len(X), seed, 0, "cpu").split(REFERENCE_BATCH):
            Xb, yb = X[idx], y[idx]

            def closure(Xb: torch.Tensor = Xb, yb: torch.Tensor = yb) -> torch.Tensor:
                """The step's objective at W (its gradient into W.grad when grad is on)."""
                loss, l2 = F.cross_entropy(Xb @ W, yb), wd / 2 * (W * W).sum()
                if torch.is_grad_enabled():
                    W.grad = None
                    if rule.plugin:  # a plain loop: autograd
                        (loss + l2).backward()
                    else:  # g + wd w: the loop's gradient, the L2 term as the rule adds it
                        W.grad = _loop_gradient(W, Xb, yb).add_(W.detach(), alpha=wd)
                if rule.plugin:  # a plain loop's loss, in the weights' dtype
                    return (loss + l2).detach()
                # the papers' loops compare objectives in float64 (as the rules do)
                return torch.tensor(float(loss.detach()) + float(l2.detach()),
                                    dtype=torch.float64)

            closure()
            if ref.data:
                opt.step(closure, idx)
            elif ref.closure:
                opt.step(closure)
            else:
                opt.step()
        trained = W.detach().clone()
        return trained, ref.answer(opt, W).detach().clone()
    finally:
        torch.set_default_dtype(previous)


def matches_reference(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        rule = get_rule(name)
        if not isinstance(rule.reference, Reference):
            raise AssertionError(f"{name} declares no Reference to be checked against")
        variants: list[dict[str, Any]] = [{}]
        for setting_name, setting in rule.settings().items():
            value = checked_value(setting, rule.reference)
            if value is not None:
                variants.append({setting_name: value,
                                 **rule.reference.alongside.get(setting_name, {})})
        for dtype, tol in REFERENCE_TOL.items():
            data = reference_data(split, dtype, features=rule.reference.features)
            for values in variants:
                # declared, with why: float32 may not hold 1e-6 here (Reference.float64_only)
                loose = dtype != torch.float64 and bool(
                    (set(values) | {"*"}) & set(rule.reference.float64_only))
                seed = 3
                settings = {k: values[k] for k in ("lr",) if k in values}
                config = Config(name, epochs=1, batch_size=REFERENCE_BATCH,
                                schedule="constant", seed=seed, hyper={
                                    k: v for k, v in values.items() if k != "lr"}, **settings)
                carry: dict[str, Any] = {}
                (record,) = fit([config], data, carry=carry)
                where = f"{name} at {values or 'its defaults'} in {str(dtype)[6:]}"
                assert record.status == "ok", f"{where}: the run {record.status}"
                trained, answer = _reference_run(rule, values, data, seed)
                assert trained.abs().max().item() > 100 * tol, f"{where}: nothing moved"
                if loose:  # what float32 can hold: the reference's own float32 error
                    exact, _ = _reference_run(rule, values, reference_data(
                        split, torch.float64, features=rule.reference.features), seed)
                    own = (trained.double() - exact).abs().max().item()
                    if own > tol:
                        mine = (carry["Wt"][0, 0].mT.double() - exact).abs().max().item()
                        assert mine <= 2 * own, (f"{where} is {mine:.2e} from {rule.reference} "
                                                 f"in float64, its own float32 run {own:.2e}")
                        continue
                gaps = ((carry["Wt"][0, 0].mT - trained).abs().max().item(),
                        (carry["W"][0] - answer).abs().max().item())
                assert max(gaps) <= tol, (f"{where} differs from {rule.reference} by "
                                          f"{max(gaps):.2e} (tolerance {tol:g})")
    return check


def bad_values(setting: Setting) -> list[Any]:
    """Values the declaration must refuse: below or above its range, NaN, a wrong type."""
    if setting.kind is bool:
        return ["yes", 1]
    c = setting.constraint
    if not isinstance(c, Interval):
        return []
    bad: list[Any] = [math.nan]
    if math.isfinite(c.low):
        bad.append(c.low - 1.0 if not c.integer else int(c.low) - 1)
    if math.isfinite(c.high):
        bad.append(c.high + 1.0)
    if c.integer:
        bad.append(float(c.low) + 0.5)
    return bad


def _final_weights(configs: list[Config], split: Any) -> torch.Tensor:
    carry: dict[str, Any] = {}
    fit(configs, split, carry=carry)
    return carry["W"]


def _gap_to_alone(together: torch.Tensor, config: Config, split: Any) -> float:
    """How far a run trained in a batch (its final weights ``together``) is from the same
    configuration trained alone."""
    return (together - _final_weights([config], split)[0]).abs().max().item()


def per_configuration_tensors(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        small = _small(split, name)
        rule = get_rule(name)
        # three configurations that differ in every float setting at once (the lr too): each
        # setting arrives as an (S, m, 1, 1) tensor, and all of them together
        values: dict[str, list[Any]] = {"lr": [rule.lr.default * f for f in (1.0, 0.5, 0.25)]}
        for setting_name, setting in rule.settings().items():
            value = other_value(setting)
            if value is not None and setting_name != "lr":
                values[setting_name] = [setting.default, value, (setting.default + value) / 2]
        configs = [_config(name, **{n: v[k] for n, v in values.items()}) for k in range(3)]
        together = _final_weights(configs, small)
        for k, c in enumerate(configs):
            gap = _gap_to_alone(together[k], c, small)
            differing = ", ".join(f"{n}={v[k]:g}" for n, v in values.items())
            assert gap <= TOL, (f"{name}: {differing} in a batch of three differs from the "
                                f"run alone by {gap:.2e}")
    return check


def batch_beside_another_rule(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        small = _small(split, name)
        rule = get_rule(name)
        # another rule that can share its batch (the same gradient estimator), else itself
        # at another lr
        other = next((o for o, r in RULES.items() if o != name and r.estimator == rule.estimator
                      and not r.plugin), None)
        mates = [_config(name, seed=s) for s in (0, 1)]
        mates += [_config(other, seed=s) if other else _config(name, seed=s,
                                                             lr=rule.lr.default * 0.5)
                  for s in (0, 1)]
        together = _final_weights(mates, small)
        order = [c for s in (0, 1) for c in mates if c.seed == s]  # the batch's seed-major order
        for k, c in enumerate(order):
            if c.optimizer != name:
                continue
            gap = _gap_to_alone(together[k], c, small)
            assert gap <= TOL, (f"{name} (seed {c.seed}) in a batch of four beside "
                                f"{other or 'itself'} differs from the run alone by {gap:.2e}")
    return check


def ranges_refused(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        rule = get_rule(name)
        for setting_name, setting in rule.settings().items():
            for bad in bad_values(setting):
                try:
                    rule(**{setting_name: bad})
                except StochoptError:
                    continue
                raise AssertionError(f"{name}: {setting_name}={bad!r} is outside its declared "
                                     f"range but was accepted")
    return check


def table_row(name: str, table: str | None = None) -> Callable[[Any], None]:
    """``table``: the text the row must be found in (the docs' page); default: the table
    generated now, which checks that generating it reads this rule."""
    def check(split: Any) -> None:
        rows = [line for line in markdown_table().splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, f"{name} has {len(rows)} rows in the generated table"
        rule = get_rule(name)
        for setting_name in rule.settings():
            assert setting_name in rows[0], f"{name}'s row does not list {setting_name}"
        assert str(rule.reference) in rows[0] and rule.default_schedule in rows[0]
        if table is not None:
            assert rows[0] in table, f"{name}'s row of the docs' table is stale: regenerate it"
    return check


CHECKS = {"matches_reference": matches_reference,
          "per_configuration_tensors": per_configuration_tensors,
          "batch_beside_another_rule": batch_beside_another_rule,
          "ranges_refused": ranges_refused, "table_row": table_row}


def checks(name: str) -> Iterator[Callable[[Any], None]]:
    """Every check of the kit for the rule ``name``."""
    for make in CHECKS.values():
        yield make(name)
