"""Someone else's optimiser as a rule: ``MODULE:NAME`` wherever an optimiser name goes.

    stochopt train --optimizer torch.optim:NAdam --hp "betas=(0.9,0.99)"
    stochopt compare --optimizers momentum,pytorch_optimizer:Lamb,./mine.py:MyOpt

MODULE is an importable module or a path to a ``.py`` file; NAME is a
``torch.optim.Optimizer`` subclass or a callable ``(params, **hyperparameters) ->
Optimizer``. Its hyperparameters are read off its constructor's signature and declared as
:class:`~stochopt.settings.Setting` s, so the command line, validation, run ids and
``results.csv`` treat them as they treat a native rule's. Two names change meaning: ``lr`` is
the run's learning rate, driven through the param groups at every step by ``--lr`` and the
schedule (the optimiser's own default when ``--lr`` is not given), and the optimiser's own
``weight_decay`` is ``opt_weight_decay``, because ``weight_decay`` is the objective's L2 term
(``+ wd w`` in the gradient, what f* is certified for).

Each model of a K-at-once batch is its own optimiser instance over its own leaf parameter,
W in the exercise's shape (d, C), so global norms, trust ratios and preconditioners never mix
models. The batched products still compute every gradient: each instance's ``p.grad`` is set
from them and its ``step()`` called, with a closure that re-evaluates that model's loss and
gradient on the step's mini-batch when ``step`` takes one. An optimiser with
``train()``/``eval()`` (schedule-free) is evaluated in ``eval()`` mode, as AlgoPerf's
``prepare_for_eval``. Its identity (the package and its version, or a file's sha256) goes into
the run id, the output folder's fingerprint and ``results.csv``'s ``source`` column.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import SettingError, StochoptError
from ..settings import POSITIVE, Setting
from .base import Hyper, Reference, Rule, State, StepBatch, parameter

OWN_DECAY = "opt_weight_decay"  # the optimiser's own weight_decay argument
# required constructor arguments the harness knows: the run's total steps, the training size
KNOWN = {"num_iterations": "total_steps", "total_steps": "total_steps",
         "num_training_steps": "total_steps", "max_steps": "total_steps",
         "num_data": "n_train", "num_samples_total": "n_train"}
# constructor arguments that are not hyperparameters: the harness's business or torch's
NOT_SETTINGS = frozenset({"params", "self", "foreach", "fused", "capturable", "differentiable"})


def is_plugin(name: str) -> bool:
    return ":" in name


def parse_value(text: str) -> Any:
    """A ``--hp`` value: a Python literal (a number, True/False/None, a tuple in
    parentheses, a quoted string), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


class PluginRule(Rule):
    """The rule of one ``MODULE:NAME`` (a subclass per name, made by :func:`plugin_rule`)."""

    default_schedule = "constant"
    plugin: ClassVar[bool] = True
    factory: ClassVar[Any] = None
    source: ClassVar[str] = ""  # "package version" or "sha256:..." of the file
    takes_closure: ClassVar[bool] = False
    # Hessian-vector products (AdaHessian, Sophia-H): p.grad must carry autograd's graph
    needs_graph: ClassVar[bool] = False
    own_names: ClassVar[dict[str, str]] = {}  # our setting name -> the constructor's
    known: ClassVar[dict[str, str]] = {}  # required arguments the loop's facts give
    # what the loop knows of the run (Updater.build sets it): total steps, training examples
    context: dict[str, int]

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """As a rule's, with a bad value of the optimiser's own named as ``--hp`` names it."""
        try:
            super().check(values)
        except SettingError as e:
            own = [n for n in e.names if n in cls.own_names]
            if not own:
                raise
            problem = str(e).removeprefix(f"{own[0]} ")
            raise StochoptError(f"{cls.name}'s {cls.own_names[own[0]]} {problem} (--hp "
                                f"{cls.own_names[own[0]]}=VALUE)") from None

    @classmethod
    def decouples(cls, values: dict[str, Any]) -> bool:
        # the optimiser's own decay changes the objective (coupled or not): no f* measures it
        declared = cls.settings().get(OWN_DECAY)
        own = values.get(OWN_DECAY, declared.default if declared is not None else 0.0)
        return isinstance(own, int | float) and own != 0

    def _value(self, name: str, s: int, j: int) -> Any:
        v = self.__dict__[name]
        if isinstance(v, torch.Tensor):  # one value per model of the block
            v = v[s, j].item() if v.dim() == 4 else v.flatten()[s * v.shape[1] + j].item()
        return v

    def init(self, w: torch.Tensor) -> State:
        S, m = w.shape[:2]
        # an optimiser that draws random numbers (Hutchinson's probes) draws them from
        # torch's global generator: seeded by the run's seed, a run repeats itself
        torch.manual_seed(getattr(self, "context", {}).get("seed", 0))
        bias = getattr(self, "context", {}).get("bias", False)
        models = []
        for s in range(S):
            for j in range(m):
                # the exercise's shapes, contiguous leaf tensors as a model's are: W (d, C)
                # and, with a bias, b (C,) as a second parameter (its last feature's row)
                full = w[s, j].mT.detach()
                params = [full[:-1], full[-1]] if bias else [full]
                params = [torch.nn.Parameter(p.contiguous().clone()) for p in params]
                kwargs = {theirs: self._value(ours, s, j)
                          for ours, theirs in self.own_names.items()}
                kwargs.update({name: getattr(self, "context", {}).get(fact, 0)
                               for name, fact in self.known.items()})
                models.append((params, self._build(params, self._value("lr", s, j), kwargs)))
        return {"t": 0, "models": models}

    def _build(self, params: list[torch.nn.Parameter], lr: float, kwargs: dict[str, Any]
               ) -> Any:
        """The optimiser over ``params``; one that wants its matrices flagged in a param
        group (Muon-style ``use_muon``) gets W flagged and the bias in a group of its own."""
        first: Exception | None = None
        flagged = [{"params": params[:1], "use_muon": True},
                   *([{"params": params[1:], "use_muon": False}] if len(params) > 1 else [])]
        for groups in (params, flagged):
            try:
                return self.factory(groups, lr=lr, **kwargs)
            except Exception as e:  # someone else's code: its failure is one line
                first = first or e
        assert first is not None
        raise StochoptError(f"{self.name} cannot be built: {_line(first)}") from None

    def update(self, w: torch.Tensor, g: torch.Tensor, state: State, lr: Hyper,
               batch: StepBatch | None = None) -> None:
        m = w.shape[1]
        for k, (params, opt) in enumerate(state["models"]):
            s, j = divmod(k, m)
            lr_k = lr[s, j].item() if isinstance(lr, torch.Tensor) else lr
            for group in opt.param_groups:  # as a torch LR scheduler drives it
                group["lr"] = lr_k
            wd = self._value("weight_decay", s, j)
            if self.needs_graph and batch is not None:  # the gradient with its graph
                _graph_gradient(params, batch.X[s], batch.y[s], wd)
            else:
                _set_grad(params, g[s, j].mT)
            closure = None
            if self.takes_closure and not self.needs_graph and batch is not None:
                closure = functools.partial(_closure, params, batch.X[s], batch.y[s], wd)
            try:
                # the loop runs without autograd; an optimiser that differentiates its
                # gradient again (Hessian-vector products) needs it back
                with torch.enable_grad() if self.needs_graph else contextlib.nullcontext():
                    opt.step(closure) if closure is not None else opt.step()
            except Exception as e:  # someone else's code: its group fails with one line
                raise StochoptError(f"{self.name}'s step raised {_line(e)}") from None
            w[s, j].copy_(_joined(params).mT)

    def state_dict(self, state: State) -> State:
        # each instance's own state_dict (torch's contract for resuming), not the objects:
        # pickling an optimiser keeps only its defaults, state and groups, not attributes
        # its __init__ set (AdaHessian's update_period)
        return {"t": state["t"], "models": [opt.state_dict() for _, opt in state["models"]]}

    def load_state_dict(self, fresh: State, saved: State) -> State:
        for (_, opt), kept in zip(fresh["models"], saved["models"], strict=True):
            opt.load_state_dict(kept)
        return {**fresh, "t": saved["t"]}

    def evaluation_point(self, w: torch.Tensor, state: State) -> torch.Tensor:
        models = state.get("models", [])
        if not models or not all(hasattr(o, "eval") and hasattr(o, "train") for _, o in models):
            return w
        point, m = w.clone(), w.shape[1]
        for k, (params, opt) in enumerate(models):
            opt.eval()  # schedule-free: the parameters move to the averaged point x
            point[k // m, k % m].copy_(_joined(params).mT)
            opt.train()
        return point


def _reference(factory: Any, own_names: dict[str, str], params: Any, lr: float,
               **settings: Any) -> Any:
    """The optimiser as a plain loop builds it: its own names, its lr."""
    return factory(params, lr=lr, **{own_names[k]: v for k, v in settings.items()})


def _answer(opt: Any, p: torch.Tensor) -> torch.Tensor:
    opt.eval()  # schedule-free: the parameters move to the averaged point
    return p.detach().clone()


def _line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _plain(value: Any) -> bool:
    """A value a run id, a flag and a results.csv cell can hold."""
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _joined(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The model's (d, C) matrix: W, with the bias as its last row when it has one."""
    if len(params) == 1:
        return params[0].detach()
    return torch.cat([params[0].detach(), params[1].detach()[None]])


def _set_grad(params: list[torch.nn.Parameter], G: torch.Tensor) -> None:
    """Each parameter's part of the model's (d, C) gradient."""
    if len(params) == 1:
        params[0].grad = G.contiguous()
    else:
        params[0].grad, params[1].grad = G[:-1].contiguous(), G[-1].contiguous()


def _closure(params: list[torch.nn.Parameter], X: torch.Tensor, y: torch.Tensor, wd: float
             ) -> torch.Tensor:
    """One model's loss on the step's mini-batch at its current weights, with its analytic
    gradient put in each parameter's ``grad`` (what ``loss.backward()`` would give). It is
    computed again even at the weights the loop took the gradient at: written as autograd
    computes it, for one model, it is a plain loop's gradient bit for bit, which an
    eigendecomposing optimiser (SOAP) needs to stay within 1e-10 of that loop in float64
    (the loop's batched products differ in the last digits, and SOAP turns those into 5e-2
    within 30 steps)."""
    with torch.no_grad():
        p = _joined(params)
        Z = X @ p
        logp = torch.log_softmax(Z, dim=1)
        loss = -logp.gather(1, y.view(-1, 1)).mean()
        R = logp.exp()
        R[torch.arange(len(y), device=y.device), y] -= 1
        grad = X.mT @ R / len(y)
        if wd:
            loss = loss + wd / 2 * (p * p).sum()
            grad = grad + wd * p
        _set_grad(params, grad)
    return loss


def _graph_gradient(params: list[torch.nn.Parameter], X: torch.Tensor, y: torch.Tensor,
                    wd: float) -> None:
    """Each parameter's mini-batch gradient by autograd, with its graph (``create_graph``),
    for optimisers that differentiate it again (Hessian-vector products)."""
    with torch.enable_grad():
        p = params[0] if len(params) == 1 else torch.cat([params[0], params[1][None]])
        loss = torch.nn.functional.cross_entropy(X @ p, y)
        if wd:
            loss = loss + wd / 2 * (p * p).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad


def import_module(module: str) -> Any:
    """The module ``module``, or one line saying it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise StochoptError(f"cannot import {module!r} ({e}); install the package that "
                            "provides it") from None


def _import(module: str) -> tuple[Any, str]:
    """The module MODULE names and its identity: ``package version`` or the file's sha256."""
    if module.endswith(".py") or "/" in module:
        path = Path(module).expanduser()
        if not path.is_file():
            raise StochoptError(f"optimizer file {module} not found")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        name = f"stochopt_plugin_{digest[:16]}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            loaded = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(loaded)
            except Exception as e:  # the user's file: whatever it raises is one line
                raise StochoptError(f"optimizer file {module} failed to import: "
                                    f"{type(e).__name__}: {' '.join(str(e).split())}") from None
            sys.modules[name] = loaded
        return sys.modules[name], f"sha256:{digest}"
    loaded = import_module(module)
    top = module.split(".")[0]
    dists = _distributions().get(top, [])
    for dist in dists:
        try:
            return loaded, f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    version = getattr(loaded, "__version__", None) or getattr(sys.modules[top], "__version__",
                                                              "")
    return loaded, f"{top} {version}".strip()


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Importable top-level names -> the distributions that provide them (one scan of the
    installed packages: a zoo of a hundred asks a hundred times)."""
    return importlib.metadata.packages_distributions()


@functools.cache
def plugin_rule(spec: str) -> type[PluginRule]:
    """The rule class of ``MODULE:NAME``, its settings read off the constructor's signature;
    one line of :class:`StochoptError` when it cannot be found or cannot run here."""
    module, _, attr = spec.rpartition(":")
    if not module or not attr:
        raise StochoptError(f"optimizer {spec!r}: give MODULE:NAME, e.g. torch.optim:NAdam or "
                            "./mine.py:MyOptimizer")
    loaded, source = _import(module)
    factory = getattr(loaded, attr, None)
    if factory is None:
        raise StochoptError(f"{module} has no {attr!r}")
    if not callable(factory):
        raise StochoptError(f"{spec} is not an optimizer class or factory")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        raise StochoptError(f"{spec}: its signature cannot be read") from None
    namespace: dict[str, Any] = {}
    own_names: dict[str, str] = {}
    known: dict[str, str] = {}
    lr_default: Any = inspect.Parameter.empty
    first = next(iter(signature.parameters), "")
    if first in ("model", "module"):
        raise StochoptError(f"{spec} takes a model (a torch.nn.Module), not parameters; "
                            "stochopt hands each model's W to its optimizer as a parameter")
    for i, p in enumerate(signature.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in NOT_SETTINGS or (
                i == 0 and p.kind != p.KEYWORD_ONLY):
            continue  # the parameters argument, *args, **kwargs, torch's implementation flags
        if p.name == "lr":
            lr_default = p.default
            continue
        if p.default is inspect.Parameter.empty and p.name in KNOWN:
            known[p.name] = KNOWN[p.name]  # the run's total steps or training size
            continue
        if p.default is inspect.Parameter.empty:
            raise StochoptError(f"{spec} requires the argument {p.name!r}, which stochopt "
                                "does not know how to give; wrap it in a factory "
                                "(params, **hyperparameters) that sets it")
        if not _plain(p.default):
            continue  # a function or an object (ADOPT's clip_lambda): the constructor's own
        ours = OWN_DECAY if p.name == "weight_decay" else p.name
        default = p.default
        if isinstance(default, int) and not isinstance(default, bool) and "float" in str(
                p.annotation):  # torch's SGD(momentum: float = 0): a number, not a count
            default = float(default)
        namespace[ours] = Setting(default, None, f"{p.name} of {spec}")
        own_names[ours] = p.name
    if isinstance(lr_default, torch.Tensor):
        lr_default = float(lr_default)
    if not isinstance(lr_default, int | float) or isinstance(lr_default, bool):
        lr_default = 1e-3  # no default (or none that is a number): --lr sets it
    namespace["lr"] = Setting(float(lr_default), POSITIVE, f"lr of {spec} (its default "
                              "unless --lr is given), scaled by the schedule")
    step = getattr(factory, "step", None)
    takes_closure = step is not None and "closure" in inspect.signature(step).parameters
    needs_graph = "hessian_distribution" in signature.parameters  # pytorch-optimizer's way
    label = f"a plain torch loop with {spec} ({source})"
    # the conformance kit's plain loop: the class itself, the objective's L2 in the loss;
    # one that differentiates its gradient again or needs the run's facts has none
    reference: Reference | str = label if needs_graph or known else Reference(
        label, functools.partial(_reference, factory, own_names), closure=takes_closure,
        l2_in_loss=True, answer=_answer if hasattr(factory, "eval") else parameter,
        unchecked={"maximize": "it ascends the loss: both runs diverge, by design"})
    rule = type(f"Plugin[{spec}]", (PluginRule,), {
        **namespace, "name": spec, "reference": reference,
        "factory": factory, "source": source, "takes_closure": takes_closure,
        "needs_graph": needs_graph, "own_names": own_names, "known": known,
        "needs_loss": takes_closure or needs_graph, "__module__": __name__,
        "__doc__": f"``{spec}`` ({source}), one instance per model."})
    for name, setting in namespace.items():
        setting.__set_name__(rule, name)
    return rule
