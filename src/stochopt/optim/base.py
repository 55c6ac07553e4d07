"""What every update rule shares: its declared settings, the ``init``/``step`` pair, and the
fused in-place kernels the rules are written with.

A rule is a pair in the optax spirit:

    state = rule.init(w)                # zeros shaped like w, plus a step counter
    rule.step(w, g, state, lr)          # updates w (and state) in place

``lr`` comes from the training loop's schedule at every step, so a rule never knows about
epochs. Hyperparameters are plain numbers or tensors that broadcast against the weights,
``(S, M, 1, 1)`` for the loop's S seeds x M configurations, so the same code updates one
model ``(d, C)`` or many with different settings. Reductions, where a rule has them, run over
the last two axes (one model's matrix), never across models.

``weight_decay`` is the L2 penalty ``(wd/2)||w||^2``: :meth:`Rule.step` adds ``wd * w`` to
the gradient before the rule, as torch.optim does. ``t`` is the 1-based step number.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import StochoptError
from ..model import one_thread
from ..settings import NON_NEGATIVE, POSITIVE, Setting

Hyper = Any  # float, or a tensor that broadcasts against the weights, e.g. (K, 1, 1)
State = dict[str, Any]


@dataclass(frozen=True)
class StepBatch:
    """What the loop hands a rule that needs more than the gradient (``needs_loss``), as an
    argument of its step: each model's loss on the step's mini-batch at w ((..., 1, 1)
    float64), the same at trial weights (``loss_at``), the batch's share of an epoch (B/N),
    the batch's examples and labels ((S, B, d), (S, B)) for rules that recompute, and the
    batch's gradient at other weights of the block's shape (``gradient_at``: MARS)."""

    loss: torch.Tensor
    loss_at: Callable[[torch.Tensor], torch.Tensor]
    fraction: float = 0.0
    X: torch.Tensor | None = None
    y: torch.Tensor | None = None
    gradient_at: Callable[[torch.Tensor], torch.Tensor] | None = None


def parameter(opt: Any, p: torch.Tensor) -> torch.Tensor:
    return p.detach()


@dataclass(frozen=True)
class Reference:
    """The implementation a rule must equal: torch.optim's class, the authors' package, or
    the paper's algorithm as a plain loop over one matrix. The conformance kit
    (:mod:`stochopt.conformance`) trains it beside the rule on the same MNIST mini-batches,
    autograd's gradient for the reference, and compares the weights.

    - ``make(params, **settings)``: the reference built from the rule's settings (``lr``
      and ``weight_decay`` among them), in the reference's own names;
    - ``answer(opt, p)``: the point it answers at (ASGD's average, schedule-free's x);
    - ``closure``: its ``step`` takes a closure that returns the mini-batch loss;
    - ``l2_in_loss``: the reference has no weight decay of its own: it steps on the
      objective ``loss + (wd/2)|w|^2`` and ``make`` gets no ``weight_decay``;
    - ``data``: a plain loop that needs the training set (variance reduction): ``make``
      also gets ``X``, ``y`` and ``batch_size``, and ``step(closure, idx)`` the batch's rows;
    - ``total_steps``: ``make`` also gets the run's number of steps (AdEMAMix's warm-ups);
    - ``values``: the non-default value to check a setting at, where the kit's own choice
      would not exercise it (ASGD's t0: averaging must start within the run);
    - ``alongside``: other settings a setting's non-default value is checked with, where
      alone it would change nothing (ADOPT's ``decouple`` needs a weight decay);
    - ``unchecked``: settings the reference cannot take, each with why;
    - ``float64_only``: settings whose non-default value float32 cannot compare to 1e-6,
      each with why (float32's last digits, amplified by the rule, part the two within 30
      steps); ``"*"``: every float32 run of the rule. Where the reference's own float32 run
      is further than 1e-6 from its float64 run, the kit checks what float32 can hold: the
      rule's float32 run within twice that distance of the reference's float64 run;
      elsewhere it compares the float32 runs to 1e-6 as for every rule;
    - ``features``: the number of features the kit's images are cropped to, centred (0:
      all): smaller data for a rule whose factorisations of d x d matrices would make the
      check take minutes (SOAP, Kron, Shampoo).
    """

    label: str
    make: Callable[..., Any]
    answer: Callable[[Any, torch.Tensor], torch.Tensor] = parameter
    closure: bool = False
    l2_in_loss: bool = False
    data: bool = False
    total_steps: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    alongside: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchecked: dict[str, str] = field(default_factory=dict)
    float64_only: dict[str, str] = field(default_factory=dict)
    features: int = 0

    def __str__(self) -> str:
        return self.label


def from_package(spec: str, **fixed: Any) -> Callable[..., Any]:
    """The class ``MODULE:NAME`` as a reference's ``make``, imported when it is called (the
    authors' packages are test extras, not dependencies); ``fixed``: constructor
    arguments of its own (``foreach=False``)."""
    def make(*args: Any, **kwargs: Any) -> Any:
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)(*args, **fixed, **kwargs)
    return make


def with_betas(make: Callable[..., Any]) -> Callable[..., Any]:
    """A reference's ``make`` that takes ``betas=(beta1, beta2)`` built from the settings
    beta1 and beta2, as torch.optim's Adam family and the authors' packages name them."""
    def build(params: Any, beta1: float, beta2: float, **settings: Any) -> Any:
        return make(params, betas=(beta1, beta2), **settings)
    return build


class Rule:
    """Base of every update rule. A subclass declares ``name``, its settings as
    :class:`~stochopt.settings.Setting` attributes (``lr`` with its own default), its
    ``default_schedule``, and writes ``init`` and ``update``; :func:`register` adds it."""

    name: ClassVar[str]
    default_schedule: ClassVar[str] = "exponential"  # the exercise's x0.9 per epoch
    estimator: ClassVar[str] = "minibatch"  # how the loop estimates the gradient it is fed
    # what it must equal (the conformance kit checks it); a plug-in's is a plain loop
    reference: ClassVar[Reference | str] = ""
    # True when weight_decay shrinks w directly (AdamW) instead of adding (wd/2)|w|^2 to the
    # objective: such a rule does not minimise f + (wd/2)|w|^2, so f - f* means nothing
    decoupled_decay: ClassVar[bool] = False
    # what the loop knows of the run, set before init: total_steps, n_train, bias, weighted
    # (sample weights), seed (and seeds, one per row of the block: a rule that draws random
    # numbers seeds each run)
    context: dict[str, Any] = {}  # noqa: RUF012  (replaced per instance, never mutated)
    # True when the rule replaces the schedule (schedule-free): only "constant" is accepted
    fixed_schedule: ClassVar[bool] = False
    # True when the rule needs the mini-batch loss (SPS, Armijo): the loop then hands its
    # step (and update) a StepBatch argument
    needs_loss: ClassVar[bool] = False
    # how its step scales, for the landscapes' lr: "gradient" (sgd: with the gradient),
    # "scale_free" (it divides by a running RMS or takes a sign: an lr on the scale of the
    # moves) or "lr_free" (lr multiplies its own estimate or caps the step it finds: 1)
    landscape_lr: ClassVar[str] = "gradient"
    # True when each update is a fixed linear combination of the gradient, the weights and
    # the rule's own buffers (SGD, heavy ball, Nesterov): a subnormal value (below 1e-38 in
    # float32) then moves no weight larger than about 1e-30, so the loop may flush such
    # values to zero, which is faster (train.flushed_subnormals). Not for a rule that takes
    # a sign (a subnormal gradient is a whole step of Rprop or Lion) or divides by a
    # running statistic (Adam's m / sqrt(v), with eps 0)
    linear: ClassVar[bool] = False
    # True for someone else's optimiser (MODULE:NAME, stochopt.optim.plugin)
    plugin: ClassVar[bool] = False
    source: ClassVar[str] = ""  # a plug-in's package and version, or its file's sha256

    lr = Setting(0.1, POSITIVE, "base learning rate, scaled by the schedule")
    weight_decay = Setting(0.0, NON_NEGATIVE, "L2 penalty (wd/2)|w|^2, wd*w added to the "
                           "gradient")

    def __init__(self, **values: Hyper) -> None:
        settings = self.settings()
        unknown = sorted(set(values) - set(settings))
        if unknown:
            raise StochoptError(
                f"optimizer {self.name!r} has no hyperparameter {', '.join(unknown)}; "
                f"it takes {', '.join(self.hyperparameters()) or 'none besides lr'}")
        # a rule built directly is checked against its declared ranges, as torch.optim's
        # __init__ does; tensors of K values are the loop's, stacked from Configs that were
        # validated one by one (and an int setting stacks as a float tensor)
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                settings[name].check(value)
        # every value in the instance's own dict: the step reads them as plain attributes
        self.__dict__.update({n: s.default for n, s in settings.items()}, **values)

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.hyperparameters())
        return f"{type(self).__name__}({values})"

    @classmethod
    @functools.cache  # per class; planning a big grid asks hundreds of thousands of times
    def settings(cls) -> dict[str, Setting]:
        """Every declared setting, ``lr`` first and ``weight_decay`` last (not to be
        changed: the dict is shared)."""
        found: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, Setting)})
        return dict(sorted(found.items(), key=lambda kv: (kv[0] != "lr",
                                                          kv[0] == "weight_decay")))

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Name -> default of every setting besides ``lr``."""
        return {n: s.default for n, s in cls.settings().items() if n != "lr"}

    @classmethod
    def decouples(cls, values: dict[str, Any]) -> bool:
        """Whether these settings decay the weights directly (see ``decoupled_decay``)."""
        return cls.decoupled_decay

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """Raise a :class:`~stochopt.errors.SettingError` naming the first bad value."""
        cls(**values)  # unknown names, then each value against its declared range
        settings = cls.settings()
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                settings[name].check(value)

    def init(self, w: torch.Tensor) -> State:
        return {"t": 0}

    def evaluation_point(self, w: torch.Tensor, state: State) -> torch.Tensor:
        """The weights that are evaluated (validation, test, suboptimality) and saved: w
        itself, or, for a rule that trains at one point and answers at another (ASGD's
        average), that other point. The per-step training metrics stay those of w."""
        return w

    def diagnostics(self, state: State) -> dict[str, torch.Tensor]:
        """Per-model quantities to record after each epoch (a column each in results.csv),
        as tensors that broadcast to the block's (S, m) models: D-Adaptation's and Prodigy's
        step-size estimate d. None for most rules."""
        return {}

    def state_dict(self, state: State) -> State:
        """The state as a checkpoint saves it: tensors, numbers, lists and dicts of them
        (a rule's own state already is; a plug-in's holds optimiser objects)."""
        return state

    def load_state_dict(self, fresh: State, saved: State) -> State:
        """The state to resume with, from a fresh :meth:`init`'s and a saved one."""
        return saved

    def update(self, w: torch.Tensor, g: torch.Tensor, state: State, lr: Hyper) -> None:
        raise NotImplementedError

    def step(self, w: torch.Tensor, g: torch.Tensor, state: State, lr: Hyper,
             batch: StepBatch | None = None) -> None:
        state["t"] += 1
        if not is_zero(self.weight_decay):
            g = add_(g.clone(), self.weight_decay, w)
        if self.needs_loss:
            self.update(w, g, state, lr, batch)
        else:
            self.update(w, g, state, lr)


def sumsq(a: torch.Tensor) -> torch.Tensor:
    """``|a|^2`` of each model (over the last two axes) as a (..., 1, 1) float64 tensor; one
    (d, C) matrix is summed in its own dtype, as a plain loop's ``(a * a).sum()``."""
    if a.dim() == 2:
        return (a * a).sum().double().view(1, 1)
    return (a * a).sum(dim=(-2, -1), keepdim=True, dtype=torch.float64)


# torch takes a CPU tensor's square roots with MKL's vector math, split between its threads
# from 2,048 entries. Split so, Adam's first roots at K = 1 came out one of two ways in
# fresh processes on a 2-core Intel Xeon (1 process in 8 differed in 3,225 of the 7,840
# entries, by up to 3e-4 relative), so a resumed run could differ from an uninterrupted
# one; taken on one thread, they came out one way in every process. Below torch's grain for
# elementwise ops (32,768 entries: up to 4 models), where the update's other ops run on one
# thread anyway, the roots are taken on one thread; there that is also the faster (7
# against 9 us at K = 1, but 27 against 20 at K = 5, so larger tensors keep the threads).
ONE_THREAD_ROOTS = (2048, 32768)


def sqrt(x: Hyper) -> Hyper:
    """sqrt of a number (``math.sqrt``, as the references compute their bias corrections)
    or, elementwise, of a tensor: ``x.sqrt()``'s values, taken on one thread for a CPU
    tensor of a size within ``ONE_THREAD_ROOTS``."""
    if not isinstance(x, torch.Tensor):
        return math.sqrt(x)
    return one_thread(torch.sqrt, x) if _roots_on_one_thread(x) else x.sqrt()


def sqrt_(x: torch.Tensor) -> torch.Tensor:
    """``x.sqrt_()``: :func:`sqrt` in place."""
    return one_thread(torch.sqrt, x, out=x) if _roots_on_one_thread(x) else x.sqrt_()


def _roots_on_one_thread(x: torch.Tensor) -> bool:
    low, high = ONE_THREAD_ROOTS
    return x.device.type == "cpu" and low <= x.numel() < high


def is_zero(x: Hyper) -> bool:
    return not isinstance(x, torch.Tensor) and x == 0


def cautious_(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Cautious masking (Liang et al. 2024), in place: ``u <- u * phi * n / (|phi| + 1)``
    with ``phi = [u g > 0]``, the coordinates where the update agrees in sign with the
    gradient, and n the model's number of weights; per model (the last two axes), as
    pytorch-optimizer's ``apply_cautious`` computes it."""
    mask = (u * g > 0).to(g.dtype)
    kept = mask.sum(dim=(-2, -1), keepdim=True) if mask.dim() > 2 else mask.sum()
    mask.mul_(u.shape[-2] * u.shape[-1] / (kept + 1))
    return u.mul_(mask)


# y <- y + a * x (* x2, / x2) in one kernel when a is a number, as torch.optim writes its
# updates; a tensor of K values costs one more small op. A mini-batch step is a few dozen
# such calls, so their count, not their arithmetic, sets its speed.
def add_(y: torch.Tensor, a: Hyper, x: torch.Tensor) -> torch.Tensor:
    return y.addcmul_(a, x) if isinstance(a, torch.Tensor) else y.add_(x, alpha=a)


def decay_add_(y: torch.Tensor, a: Hyper, x: torch.Tensor) -> torch.Tensor:
    """y <- a * y + x."""
    if isinstance(a, torch.Tensor):
        return y.mul_(a).add_(x)
    return torch.add(x, y, alpha=a, out=y)


def addcmul_(y: torch.Tensor, a: Hyper, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return y.addcmul_(a * x, x2)
    return y.addcmul_(x, x2, value=a)


def addcdiv_(y: torch.Tensor, a: Hyper, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return y.addcdiv_(a * x, x2)
    return y.addcdiv_(x, x2, value=a)



