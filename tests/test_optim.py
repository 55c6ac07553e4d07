"""Rules against torch.optim and the authors' packages on a 200-step random gradient sequence,
at combinations of settings (the conformance kit, tests/test_conformance.py, checks every
rule against its declared reference on MNIST, one setting changed at a time); K
configurations at once against K runs; D-Adaptation's estimate d itself."""

import pytest
import torch

from stochopt.errors import StochoptError
from stochopt.optim import make_optimizer

# (our name, our hyperparameters, torch class, torch kwargs, lr)
CASES = [
    ("sgd", {}, torch.optim.SGD, {}, 0.1),
    ("momentum", {"momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9}, 0.1),
    ("momentum", {"momentum": 0.8, "dampening": 0.3}, torch.optim.SGD,
     {"momentum": 0.8, "dampening": 0.3}, 0.05),
    ("nesterov", {"momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, 0.1),
    ("adagrad", {}, torch.optim.Adagrad, {}, 0.01),
    ("adagrad", {"initial_accumulator_value": 0.1}, torch.optim.Adagrad,
     {"initial_accumulator_value": 0.1}, 0.05),
    ("rmsprop", {}, torch.optim.RMSprop, {}, 0.01),
    ("rmsprop", {"centered": True}, torch.optim.RMSprop, {"centered": True}, 0.01),
    ("rmsprop", {"momentum": 0.9}, torch.optim.RMSprop, {"momentum": 0.9}, 0.01),
    ("rmsprop", {"momentum": 0.5, "centered": True, "alpha": 0.9}, torch.optim.RMSprop,
     {"momentum": 0.5, "centered": True, "alpha": 0.9}, 0.01),
    ("adadelta", {}, torch.optim.Adadelta, {}, 1.0),
    ("adadelta", {"rho": 0.95, "eps": 1e-5}, torch.optim.Adadelta, {"rho": 0.95, "eps": 1e-5},
     0.5),
    ("adam", {}, torch.optim.Adam, {}, 1e-3),
    ("adam", {"beta1": 0.8, "beta2": 0.99}, torch.optim.Adam, {"betas": (0.8, 0.99)}, 1e-2),
    ("adam", {"amsgrad": True}, torch.optim.Adam, {"amsgrad": True}, 1e-2),
    ("adamw", {}, torch.optim.AdamW, {}, 1e-2),
    ("adamw", {"amsgrad": True}, torch.optim.AdamW, {"amsgrad": True}, 1e-2),
    ("nadam", {}, torch.optim.NAdam, {}, 2e-3),
    ("adamax", {}, torch.optim.Adamax, {}, 2e-3),
    ("adamax", {"beta1": 0.5, "beta2": 0.99, "eps": 1e-3}, torch.optim.Adamax,
     {"betas": (0.5, 0.99), "eps": 1e-3}, 1e-2),
    ("radam", {}, torch.optim.RAdam, {}, 1e-3),
    ("radam", {"beta2": 0.9, "decoupled_weight_decay": True}, torch.optim.RAdam,
     {"betas": (0.9, 0.9), "decoupled_weight_decay": True}, 1e-2),
    ("adafactor", {}, torch.optim.Adafactor, {}, 1e-2),
    ("adafactor", {"beta2_decay": -0.5, "eps2": 1e-2, "d": 2.0}, torch.optim.Adafactor,
     {"beta2_decay": -0.5, "eps": (None, 1e-2), "d": 2.0}, 0.05),
]
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture
def _restore_default_dtype():
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)


def _gradients(steps, shape, dtype):
    g = torch.Generator().manual_seed(123)
    # scaled so that the weights stay of order 1, where 1e-6 is a few float32 ulps
    return [0.1 * torch.randn(shape, generator=g, dtype=dtype) for _ in range(steps)]


def _side_by_side(make_ref, name, ours, lr, weight_decay, dtype, l2_to_ref=False):
    """Our rule and a reference optimiser fed the same 200 gradients from the same start;
    ``l2_to_ref`` hands the reference the L2 gradient g + wd w (for one without weight decay).
    Returns (w, w0, the reference's parameter, the reference, our rule, its state)."""
    shape = (7, 5)
    w0 = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
    ref_param = torch.nn.Parameter(w0.clone())
    ref = make_ref(ref_param)
    opt = make_optimizer(name, weight_decay=weight_decay, **ours)
    w = w0.clone()
    state = opt.init(w)
    for g in _gradients(200, shape, dtype):
        ref_param.grad = g + weight_decay * ref_param.detach() if l2_to_ref else g.clone()
        ref.step()
        opt.step(w, g, state, lr)
    return w, w0, ref_param, ref, opt, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(("name", "ours", "ref_cls", "ref_kwargs", "lr"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_optim(name, ours, ref_cls, ref_kwargs, lr, weight_decay, dtype,
                             _restore_default_dtype):
    # torch keeps scalar state (NAdam's mu_product, step counts) in the default dtype
    torch.set_default_dtype(dtype)  # restored by the fixture
    w, w0, ref_param, *_ = _side_by_side(
        lambda p: ref_cls([p], lr=lr, weight_decay=weight_decay, **ref_kwargs),
        name, ours, lr, weight_decay, dtype)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    assert (w - w0).abs().max().item() > 10 * TOL[dtype]  # the test moved the weights


@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam", "nadam", "adadelta", "adamax",
                                  "radam", "rprop", "asgd", "lion"])
def test_k_configurations_at_once_equal_k_separate_runs(name):
    """Hyperparameters as (K,1,1) tensors update K models exactly as K separate runs."""
    hypers = {"momentum": ("momentum", [0.0, 0.5, 0.9]), "rmsprop": ("alpha", [0.9, 0.99, 0.5]),
              "adam": ("beta1", [0.0, 0.9, 0.5]), "nadam": ("beta2", [0.9, 0.999, 0.99]),
              "adadelta": ("rho", [0.9, 0.5, 0.95]), "adamax": ("beta2", [0.9, 0.999, 0.5]),
              # 0.5: rho_t stays below 5 (momentum SGD); 0.9: it crosses 5 at step 6
              "radam": ("beta2", [0.5, 0.9, 0.999]), "rprop": ("eta_plus", [1.1, 1.2, 2.0]),
              "asgd": ("t0", [1.0, 10.0, 1e6]),  # averaging from step 2, 11, never
              "lion": ("beta1", [0.0, 0.9, 0.5])}
    key, values = hypers[name]
    lrs = [0.1, 0.01, 0.001]
    W = torch.zeros(3, 6, 4, dtype=torch.float64)
    opt = make_optimizer(name, **{key: torch.tensor(values, dtype=W.dtype).view(3, 1, 1)})
    state = opt.init(W)
    singles = [make_optimizer(name, **{key: v}) for v in values]
    ws = [torch.zeros(6, 4, dtype=torch.float64) for _ in values]
    states = [o.init(w) for o, w in zip(singles, ws, strict=True)]
    lr = torch.tensor(lrs, dtype=W.dtype).view(3, 1, 1)
    for g in _gradients(50, (3, 6, 4), torch.float64):
        opt.step(W, g, state, lr)
        for k in range(3):
            singles[k].step(ws[k], g[k], states[k], lrs[k])
    for k in range(3):
        assert torch.allclose(W[k], ws[k], atol=1e-13, rtol=0)


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(StochoptError, match="choose one of sgd, momentum"):
        make_optimizer("not-an-optimizer")
    with pytest.raises(StochoptError, match="has no hyperparameter beta1"):
        make_optimizer("momentum", beta1=0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(("ours", "theirs", "lr"), [
    ({}, {}, 0.01),
    ({"eta_minus": 0.3, "eta_plus": 1.5, "step_size_min": 1e-4, "step_size_max": 0.05},
     {"etas": (0.3, 1.5), "step_sizes": (1e-4, 0.05)}, 0.02)])
def test_rprop_matches_torch_optim(ours, theirs, lr, weight_decay, dtype):
    """torch's Rprop has no weight decay: it is fed the L2 gradient g + wd w, which is what
    every rule here steps on."""
    w, w0, ref_param, *_ = _side_by_side(lambda p: torch.optim.Rprop([p], lr=lr, **theirs),
                                         "rprop", ours, lr, weight_decay, dtype, l2_to_ref=True)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    assert (w - w0).abs().max().item() > 10 * TOL[dtype]


def test_a_wrong_bias_correction_fails_the_reference_test(monkeypatch, _restore_default_dtype):
    """The reference tests can fail: Adamax with its bias correction off by one step."""
    from stochopt.optim import adam

    def wrong(self, w, g, state, lr):
        m = state["m"].lerp_(g, 1 - self.beta1)
        u = state["u"]
        torch.maximum(u.mul_(self.beta2), g.abs().add_(self.eps), out=u)
        w.addcdiv_(m, u, value=-lr / (1 - self.beta1 ** (state["t"] + 1)))

    monkeypatch.setattr(adam.Adamax, "update", wrong)
    with pytest.raises(AssertionError):
        test_matches_torch_optim("adamax", {}, torch.optim.Adamax, {}, 2e-3, 0.0,
                                 torch.float64, None)


def test_a_wrong_bias_correction_fails_the_kit(monkeypatch, split):
    """The kit's reference check can fail too: the same defect, on MNIST, through the loop."""
    from stochopt.conformance import matches_reference
    from stochopt.optim import adam

    original = adam.Adamax.update

    def wrong(self, w, g, state, lr):
        state["t"] += 1  # one step ahead in the bias correction
        original(self, w, g, state, lr)
        state["t"] -= 1

    monkeypatch.setattr(adam.Adamax, "update", wrong)
    with pytest.raises(AssertionError, match=r"adamax at its defaults in float32 differs "
                                              r"from torch\.optim\.Adamax"):
        matches_reference("adamax")(split)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(("hyper", "lr"), [({}, 0.01),
                                           ({"lambd": 1e-2, "alpha": 0.5, "t0": 50.0}, 0.05)])
def test_asgd_and_its_average_match_torch_optim(hyper, lr, weight_decay, dtype,
                                                _restore_default_dtype):
    torch.set_default_dtype(dtype)  # torch keeps eta and mu in the default dtype
    w, _, ref_param, ref, opt, state = _side_by_side(
        lambda p: torch.optim.ASGD([p], lr=lr, weight_decay=weight_decay, **hyper),
        "asgd", hyper, lr, weight_decay, dtype)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    average = ref.state[ref_param]["ax"]
    assert (opt.evaluation_point(w, state) - average).abs().max().item() <= TOL[dtype]
    if "t0" in hyper:  # averaging started at step 51: the average is not the iterate
        assert (average - ref_param.detach()).abs().max().item() > 100 * TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize(("hyper", "lr"), [({}, 1e-4), ({"beta1": 0.8, "beta2": 0.9}, 3e-3)])
def test_lion_matches_the_authors_package(hyper, lr, weight_decay, dtype):
    from lion_pytorch import Lion

    betas = (hyper.get("beta1", 0.9), hyper.get("beta2", 0.99))
    w, w0, ref_param, *_ = _side_by_side(
        lambda p: Lion([p], lr=lr, betas=betas, weight_decay=weight_decay),
        "lion", hyper, lr, weight_decay, dtype)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    assert (w - w0).abs().max().item() > 10 * TOL[dtype]


SCHEDULE_FREE = [  # (our name, our hyperparameters, the reference's kwargs, lr)
    ("sgd-schedulefree", {}, {}, 1.0),
    ("sgd-schedulefree", {"momentum": 0.7, "warmup_steps": 20, "r": 0.5,
                          "weight_lr_power": 1.0}, {"momentum": 0.7, "warmup_steps": 20,
                                                    "r": 0.5, "weight_lr_power": 1.0}, 0.3),
    ("adamw-schedulefree", {}, {}, 0.0025),
    ("adamw-schedulefree", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "warmup_steps": 10,
                            "r": 1.0}, {"betas": (0.8, 0.99), "eps": 1e-6,
                                        "warmup_steps": 10, "r": 1.0}, 0.01),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(("name", "ours", "theirs", "lr"), SCHEDULE_FREE,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SCHEDULE_FREE)])
def test_schedule_free_matches_the_authors_package(name, ours, theirs, lr, weight_decay, dtype):
    """The training point y and, after the reference's eval(), the evaluation point x."""
    import schedulefree

    cls = {"sgd-schedulefree": schedulefree.SGDScheduleFree,
           "adamw-schedulefree": schedulefree.AdamWScheduleFree}[name]
    def make(p):
        ref = cls([p], lr=lr, weight_decay=weight_decay, foreach=False, **theirs)
        ref.train()  # 1.4.1 starts in eval mode
        return ref

    w, w0, ref_param, ref, opt, state = _side_by_side(make, name, ours, lr, weight_decay,
                                                      dtype)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    ref.eval()  # the reference's answering point, x
    x = opt.evaluation_point(w, state)
    assert (x - ref_param.detach()).abs().max().item() <= TOL[dtype]
    assert (x - w).abs().max().item() > 100 * TOL[dtype]  # x is not y
    assert (w - w0).abs().max().item() > 10 * TOL[dtype]


D_ADAPTED = [  # (our name, our hyperparameters, the reference's kwargs)
    ("prodigy", {}, {}),
    ("prodigy", {"beta1": 0.8, "beta2": 0.99, "d0": 1e-6, "d_coef": 0.5,
                 "use_bias_correction": True, "safeguard_warmup": True},
     {"betas": (0.8, 0.99), "d0": 1e-6, "d_coef": 0.5, "use_bias_correction": True,
      "safeguard_warmup": True}),
    ("prodigy", {"decouple": False}, {"decouple": False}),
    ("dadapt-adam", {}, {}),
    ("dadapt-adam", {"beta1": 0.8, "beta2": 0.99, "d0": 1e-4, "use_bias_correction": True,
                     "decouple": True},
     {"betas": (0.8, 0.99), "d0": 1e-4, "use_bias_correction": True, "decouple": True}),
    ("dadapt-sgd", {}, {}),
    ("dadapt-sgd", {"momentum": 0.9, "d0": 1e-5}, {"momentum": 0.9, "d0": 1e-5}),
]


def _on_mnist(make_ref, name, ours, lr, weight_decay, dtype, split, steps=30, batch=128):
    """Our rule and the reference, each from W = 0, each stepping on the mini-batch
    gradient of the softmax loss at its own weights, over ``steps`` MNIST batches."""
    from stochopt.model import gradient

    X, y = split.X_train[: steps * batch].to(dtype), split.y_train[: steps * batch]
    ref_param = torch.nn.Parameter(torch.zeros(X.shape[1], 10, dtype=dtype))
    ref = make_ref(ref_param)
    opt = make_optimizer(name, weight_decay=weight_decay, **ours)
    w = torch.zeros(X.shape[1], 10, dtype=dtype)
    state = opt.init(w)
    for Xb, yb in zip(X.split(batch), y.split(batch), strict=True):
        ref_param.grad = gradient(ref_param.detach(), Xb, yb)
        ref.step()
        opt.step(w, gradient(w, Xb, yb), state, lr)
    return w, ref_param, ref, opt, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize(("name", "ours", "theirs"), D_ADAPTED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(D_ADAPTED)])
def test_learning_rate_free_adams_match_the_authors_packages(name, ours, theirs,
                                                              weight_decay, dtype, split):
    """30 MNIST mini-batch steps: the weights and the estimate d itself."""
    from dadaptation import DAdaptAdam, DAdaptSGD
    from prodigyopt import Prodigy

    cls = {"prodigy": Prodigy, "dadapt-adam": DAdaptAdam, "dadapt-sgd": DAdaptSGD}[name]
    w, ref_param, ref, opt, state = _on_mnist(
        lambda p: cls([p], lr=1.0, weight_decay=weight_decay, **theirs), name, ours, 1.0,
        weight_decay, dtype, split)
    assert (w - ref_param.detach()).abs().max().item() <= TOL[dtype]
    d = float(opt.diagnostics(state)["d_estimate"].flatten()[0])
    assert d == pytest.approx(ref.param_groups[0]["d"], rel=1e-5 if dtype == torch.float32
                              else 1e-10)
    assert d > 5 * ours.get("d0", 1e-6)  # d grew: the test exercises the estimate
    assert w.abs().max().item() > 10 * TOL[dtype]




@pytest.mark.parametrize("name", ["adam", "adamw", "lion"])
def test_cautious_false_is_the_plain_rule_bit_for_bit_and_true_masks(name, split):
    """``cautious=False`` runs the rule's own arithmetic (in float64, 0 from its torch /
    lion-pytorch reference stepping on the same gradients); ``cautious=True`` moves other
    weights (the mask is applied), which the kit checks against its own reference."""
    from stochopt.conformance import REFERENCE_BATCH, _reference_run, reference_data
    from stochopt.optim import get_rule
    from stochopt.train import Config, fit

    data = reference_data(split, torch.float64, steps=20)

    def run(**hyper):
        carry: dict = {}
        fit([Config(name, epochs=1, batch_size=REFERENCE_BATCH, schedule="constant", seed=3,
                    hyper=hyper)], data, carry=carry)
        return carry["Wt"][0, 0].mT

    plain, masked = run(cautious=False), run(cautious=True)
    reference, _ = _reference_run(get_rule(name), {}, data, 3)
    assert torch.equal(plain, run()) and torch.equal(plain, reference)
    assert (plain - masked).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["soap"])
def test_kronecker_rules_treat_each_model_of_a_batch_as_alone(name, split):
    """A Kronecker-factored rule's models in one batch of three, each with its own beta1
    and lr and its own gradients, equal the three runs alone bit for bit (the rule's own
    arithmetic, model by model; the kit checks the same through the loop, where SOAP takes
    each model's gradient again as it is alone)."""
    from stochopt.conformance import _loop_gradient, crop
    from stochopt.optim import get_rule

    rule = get_rule(name)  # the images' centre: the same checks, a quarter of the d x d work
    X, y = crop(split.X_train[:64 * 12], 196).double(), split.y_train[:64 * 12]
    beta1, lr = [0.95, 0.5, 0.8], [3e-3, 1e-3, 2e-3]
    together = rule(beta1=torch.tensor(beta1, dtype=torch.float64).view(1, 3, 1, 1))
    lr3 = torch.tensor(lr, dtype=torch.float64).view(1, 3, 1, 1)
    alone = [rule(beta1=b) for b in beta1]
    w3 = torch.zeros(1, 3, 10, X.shape[1], dtype=torch.float64)
    w1 = [torch.zeros(1, 1, 10, X.shape[1], dtype=torch.float64) for _ in range(3)]
    s3, s1 = together.init(w3), [r.init(w) for r, w in zip(alone, w1, strict=True)]
    for step in range(12):
        # each model its own batch: the rows of a different step
        g = [_loop_gradient(w1[j][0, 0].mT, X[64 * ((step + 4 * j) % 12):][:64],
                            y[64 * ((step + 4 * j) % 12):][:64]).mT for j in range(3)]
        together.step(w3, torch.stack(g)[None], s3, lr3)
        for j in range(3):
            alone[j].step(w1[j], g[j][None, None].clone(), s1[j], lr[j])
    for j in range(3):
        assert torch.equal(w3[0, j], w1[j][0, 0]), f"model {j} differs from itself alone"
    assert (w3[0, 0] - w3[0, 1]).abs().max() > 1e-3  # the settings and batches were used
