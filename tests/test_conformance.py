"""The conformance kit over every registered rule (stochopt.conformance): a rule
added to the registry is checked here without a test of its own; one registered from a
temporary file, with no other file changed, passes the whole kit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stochopt.conformance import CHECKS, table_row
from stochopt.optim import RULES

PAGE = Path(__file__).resolve().parents[1] / "docs" / "optimisers.md"
NAMES = sorted(RULES)  # at collection: the registry as the package declares it


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", NAMES)
def test_every_rule_passes_the_kit(name, check, split):
    if check == "table_row":
        table_row(name, PAGE.read_text())(split)
    else:
        CHECKS[check](name)(split)


# plug-ins: the kit's first three checks against a plain torch loop with the same class; a
# torch.optim class, one with a global norm, one with a closure, one schedule-free, ADOPT
PLUGINS = ["torch.optim:NAdam", "pytorch_optimizer:Lamb", "pytorch_optimizer:AliG",
           "pytorch_optimizer:ScheduleFreeAdamW", "adopt:ADOPT"]


@pytest.mark.parametrize("check", ["matches_reference", "per_configuration_tensors",
                                   "batch_beside_another_rule"])
@pytest.mark.parametrize("spec", PLUGINS)
def test_plugins_pass_the_kit(spec, check, split):
    pytest.importorskip(spec.split(":")[0])
    CHECKS[check](spec)(split)


RULE_FILE = '''
import torch

from stochopt.optim import register
from stochopt.optim.base import Reference, Rule, add_
from stochopt.settings import POSITIVE, UNIT, Setting


class PlainLoop(torch.optim.Optimizer):
    """The rule written plainly, over one matrix."""

    def __init__(self, params, lr, mu, weight_decay):
        super().__init__(params, {"lr": lr, "mu": mu, "weight_decay": weight_decay})
        self.m = None

    @torch.no_grad()
    def step(self):
        group = self.param_groups[0]
        (p,) = group["params"]
        g = p.grad + group["weight_decay"] * p
        self.m = torch.zeros_like(p) if self.m is None else self.m
        self.m = group["mu"] * self.m + (1 - group["mu"]) * g
        p -= group["lr"] * self.m


@register
class HalfMomentum(Rule):
    """Momentum with a damped buffer (a test's own):  ``m <- mu m + (1 - mu) g ;
    w <- w - lr m``."""

    name = "test-half-momentum"
    reference = Reference("a plain loop (PlainLoop)", PlainLoop)
    default_schedule = "constant"
    lr = Setting(0.1, POSITIVE, "base learning rate")
    mu = Setting(0.5, UNIT, "the buffer's decay")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        m = state["m"]
        m.mul_(self.mu).add_((1 - self.mu) * g)
        add_(w, -lr, m)
'''


def test_a_rule_registered_from_a_temporary_file_passes_the_whole_kit(tmp_path, split):
    path = tmp_path / "half_momentum.py"
    path.write_text(RULE_FILE)
    spec = importlib.util.spec_from_file_location("half_momentum", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # registers it
        for make in CHECKS.values():
            make("test-half-momentum")(split)
    finally:
        RULES.pop("test-half-momentum", None)


def test_the_kit_catches_a_rule_that_mixes_its_models(tmp_path, split):
    """A setting read as one number for the whole batch (here: the first model's) passes
    alone but not in a batch of three: the kit must fail it."""
    path = tmp_path / "mixing.py"
    path.write_text(RULE_FILE.replace("test-half-momentum", "test-mixing").replace(
        "m.mul_(self.mu)", "m.mul_(self.mu.flatten()[0] if hasattr(self.mu, 'flatten') "
        "else self.mu)").replace("(1 - self.mu) * g", "(1 - (self.mu.flatten()[0] if "
                                  "hasattr(self.mu, 'flatten') else self.mu)) * g"))
    spec = importlib.util.spec_from_file_location("mixing", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        with pytest.raises(AssertionError, match="in a batch of three"):
            CHECKS["per_configuration_tensors"]("test-mixing")(split)
    finally:
        RULES.pop("test-mixing", None)
