"""The training loop: determinism, the exercise's accuracy, K-at-once equals one-at-a-time,
divergence, and the fast path against a plain loop written out as the exercise does it."""

import gc
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import torch_threads

from stochopt.data import Split, batch_order, load_split
from stochopt.model import cross_entropy, gradient
from stochopt.optim import RULES
from stochopt.train import Config, EpochCollector, StepMetrics, fit, plan_groups


def _each_equals_it_alone(configs, split, keys=("val_loss",), tol=1e-5, f_star=None):
    """Train ``configs`` together; each run's weights and ``keys`` of its first epoch must
    equal those of the same configuration trained alone. Returns the runs together."""
    together = fit(configs, split, f_star=f_star)
    stars = f_star or [None] * len(configs)
    for c, r, s in zip(configs, together, stars, strict=True):
        (alone,) = fit(c, split, f_star=None if s is None else [s])
        assert abs(r.weights - alone.weights).max() <= 1e-5
        for key in keys:
            assert r.rows[0][key] == pytest.approx(alone.rows[0][key], abs=tol)
    return together


def test_same_seed_same_history_other_seed_differs(split):
    c = Config(epochs=1, batch_size=256)
    a, b = fit(c, split)[0], fit(c, split)[0]
    other = fit(Config(epochs=1, batch_size=256, seed=1), split)[0]
    timing = {"seconds", "batch_seconds"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in a.rows]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in b.rows]
    assert (a.weights == b.weights).all()
    assert a.rows[0]["train_loss"] != other.rows[0]["train_loss"]
    assert not (a.weights == other.weights).all()


def test_two_epochs_of_momentum_reach_90_percent_validation_accuracy(split):
    """Heavy ball at lr 0.1, mu 0.9 is noisy: the epoch-2 validation accuracy of one data
    order swings by about +-0.6 points (seed 0 alone: 89.7%), so the claim is checked on
    the mean over three data orders."""
    runs = [fit(Config(epochs=2, seed=seed), split)[0] for seed in (0, 1, 2)]
    assert sum(h.rows[-1]["val_acc"] for h in runs) / 3 >= 90.0
    h = runs[0]
    assert h.rows[0]["lr"] == 0.1 and h.rows[1]["lr"] == pytest.approx(0.09, abs=1e-15)
    assert 80.0 <= h.test_acc <= 100.0


def _plain_momentum_loop(split, config):
    """The exercise's loop, written out with no sharing of code paths beyond the gradient:
    per-sample gathers, X @ W, metrics of the updated model computed at every step."""
    X, y = split.X_train.double(), split.y_train
    W = torch.zeros(X.shape[1], 10, dtype=torch.float64)
    m = torch.zeros_like(W)
    losses, accs = [], []
    for t, idx in enumerate(batch_order(len(X), config.batch_size, config.seed, 0, "cpu")):
        g = gradient(W, X[idx], y[idx])
        m = g.clone() if t == 0 else 0.9 * m + g
        W = W - 0.1 * m
        Z = X[idx] @ W
        losses.append(cross_entropy(Z, y[idx]).item())
        accs.append(100 * (Z.argmax(dim=1) == y[idx]).double().mean().item())
    return W, sum(losses) / len(losses), sum(accs) / len(accs)


@pytest.mark.parametrize("batch_size", [4000, 7000])  # 12 full batches; 6 and a short one
def test_fast_path_equals_the_plain_exercise_loop(split, batch_size):
    (h,) = fit(Config(epochs=1, batch_size=batch_size), split)
    W_ref, loss, acc = _plain_momentum_loop(split, Config(batch_size=batch_size))
    assert torch.allclose(torch.from_numpy(h.weights).double(), W_ref, atol=1e-6, rtol=0)
    assert h.rows[0]["train_loss"] == pytest.approx(loss, abs=1e-6)
    # float32 rounding of a percentage is ~1e-5; one example miscounted would be 1e-2
    assert h.rows[0]["train_acc"] == pytest.approx(acc, abs=1e-4)


def test_configurations_with_different_update_rules_train_together_as_alone(split):
    """One batch of K with several update rules (each on its block of the K, given here
    interleaved) gives each configuration what it gives alone."""
    configs = [Config(optimizer="adam", lr=3e-3), Config(optimizer="momentum"),
               Config(optimizer="adam", hyper={"amsgrad": True}),
               Config(optimizer="nesterov", lr=0.05, lr_decay=0.5),
               Config(optimizer="adam", lr=1e-3, hyper={"beta1": 0.8}),
               Config(optimizer="rmsprop", hyper={"centered": True})]
    for c in configs:
        c.epochs, c.batch_size = 1, 512
    f_star = [0.01 * k for k in range(len(configs))]  # distinct, to catch a reordering
    together = _each_equals_it_alone(configs, split, ("train_loss", "val_loss", "suboptimality"),
                                     f_star=f_star)
    assert [h.config for h in together] == configs


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_configuration_inside_a_sweep_equals_it_alone(split, optimizer):
    lrs = {"sgd": [0.05, 0.2], "momentum": [0.01, 0.1], "adam": [3e-4, 3e-3]}[optimizer]
    # exponential for adam too (its default is constant), so that lr_decay varies in the K
    configs = [Config(optimizer=optimizer, lr=lr, epochs=1, batch_size=512, lr_decay=d,
                      schedule="exponential") for lr, d in zip(lrs, [0.9, 0.5], strict=True)]
    _each_equals_it_alone(configs, split, ("val_acc",), tol=1e-3)


def test_a_non_finite_loss_is_diverged(split):
    (h,) = fit(Config(optimizer="sgd", lr=1e38, epochs=2, batch_size=512), split)
    assert h.status == "diverged" and not math.isfinite(h.rows[0]["train_loss"])


def test_train_metrics_before_reuses_the_step_logits(split):
    """'before' records each batch's loss at the weights the gradient was taken at."""
    config = Config(epochs=1, batch_size=4000, train_metrics="before")
    (h,) = fit(config, split)
    X, y = split.X_train.double(), split.y_train
    W = torch.zeros(784, 10, dtype=torch.float64)
    m, losses = torch.zeros_like(W), []
    for t, idx in enumerate(batch_order(len(X), 4000, 0, 0, "cpu")):
        losses.append(cross_entropy(X[idx] @ W, y[idx]).item())
        g = gradient(W, X[idx], y[idx])
        m = g if t == 0 else 0.9 * m + g
        W = W - 0.1 * m
    assert h.rows[0]["train_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-6)


def test_full_batch_is_gradient_descent(data_dir):
    split = load_split(data_dir, dtype=torch.float64)  # float32 sums of 48k terms drift ~1e-6
    (h,) = fit(Config(optimizer="sgd", batch_size=len(split.X_train), epochs=2,
                      schedule="constant", lr=0.5), split)
    X, y = split.X_train, split.y_train
    W = torch.zeros(784, 10, dtype=torch.float64)
    for _ in range(2):
        W = W - 0.5 * gradient(W, X, y)
    assert (torch.from_numpy(h.weights).double() - W).abs().max().item() <= 1e-7  # float32 out


def test_no_garbage_collection_runs_between_the_steps_of_an_epoch(split, monkeypatch):
    """The collector waits while an epoch's steps are timed (a full collection walks all of
    torch's objects: 0.09 s inside a 0.15 s epoch of a fresh process's first fit), runs
    between epochs, and is left as the caller had it, after an error too."""
    steps_done = [0]
    add = StepMetrics.add

    def counted(self, Zt, y):  # StepMetrics.add: once per step, inside the timed loop
        steps_done[0] += 1
        add(self, Zt, y)

    monkeypatch.setattr(StepMetrics, "add", counted)
    collected_at: list[int] = []  # the steps done when each collection started

    def callback(phase, info):
        if phase == "start":
            collected_at.append(steps_done[0])

    threshold = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(10, 10**6, 10**6)  # a young collection every few steps, if let
    try:
        fit(Config(batch_size=4096, epochs=2), split)
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
    steps = math.ceil(len(split.X_train) / 4096)
    assert steps_done[0] == 2 * steps and gc.isenabled()
    assert collected_at and {n % steps for n in collected_at} == {0}, collected_at
    assert steps in collected_at  # between the epochs it runs

    def failing(self, Zt, y):
        raise RuntimeError("a step failed")

    monkeypatch.setattr(StepMetrics, "add", failing)
    with pytest.raises(RuntimeError, match="a step failed"):
        fit(Config(batch_size=4096, epochs=1), split)
    assert gc.isenabled()
    monkeypatch.setattr(StepMetrics, "add", add)
    gc.disable()  # a caller that runs with the collector off keeps it off
    try:
        fit(Config(batch_size=4096, epochs=2), split)
        assert not gc.isenabled()
    finally:
        gc.enable()
    # a fit in another thread whose epoch begins during this one's and ends after it: the
    # collector stays off until the last epoch ends, then is on, as the first found it
    with EpochCollector() as first:
        first.off()
        with EpochCollector() as second:
            second.off()
            first.back()
            assert not gc.isenabled()
            second.back()
        assert gc.isenabled()


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_step_metrics_in_chunks_equal_every_step_evaluated_alone(chunk):
    """Deferred, chunked evaluation (with a last, short batch) against torch's
    cross_entropy and argmax on each step and each of the K models."""
    g = torch.Generator().manual_seed(0)
    K, steps = 3, [8] * 7 + [5]
    batches = [(torch.randn(K, 10, b, generator=g, dtype=torch.float64) * 3,
                torch.randint(0, 10, (b,), generator=g)) for b in steps]
    metrics = StepMetrics(K, 8)
    metrics.chunk = chunk
    for Zt, y in batches:
        metrics.add(Zt, y)
    loss, acc = metrics.means()
    for k in range(K):
        ref_loss = [F.cross_entropy(Zt[k].T, y).item() for Zt, y in batches]
        ref_acc = [100 * (Zt[k].T.argmax(1) == y).double().mean().item() for Zt, y in batches]
        assert loss[k] == pytest.approx(sum(ref_loss) / len(steps), abs=1e-12)
        assert acc[k] == pytest.approx(sum(ref_acc) / len(steps), abs=1e-10)


def test_seeds_train_as_one_batch_and_each_run_equals_it_alone(split):
    """Three seeds x two optimisers: one batch of K = 6 (each seed gathers its own
    mini-batch, one batched product per step), each run equal to the same run alone."""
    configs = [Config(optimizer=o, seed=s, epochs=1, batch_size=1000)
               for s in (2, 0, 1) for o in ("momentum", "adam")]
    assert plan_groups(configs) == [list(range(6))]
    together = _each_equals_it_alone(configs, split,
                                     ("train_loss", "train_acc", "val_loss", "val_acc"))
    assert [r.config for r in together] == configs
    assert not (together[0].weights == together[2].weights).all()  # the seeds differ


def test_plan_groups_splits_what_cannot_share_a_batch():
    a, b = Config(optimizer="sgd"), Config(optimizer="adam")
    configs = [a, Config(optimizer="sgd", seed=1), b, Config(optimizer="sgd", batch_size=32),
               Config(optimizer="sgd")]
    # sgd has seeds {0, 1}, adam only {0}: two rectangles; another batch size; a repeat
    assert plan_groups(configs) == [[0, 1], [2], [3], [4]]


def test_plan_groups_caps_the_models_per_group_keeping_every_seed_of_a_configuration():
    configs = [Config(optimizer="sgd", lr=lr, seed=seed, batch_size=bs)
               for bs in (32, 64) for lr in (0.1, 0.2, 0.3) for seed in (0, 1)]
    # at most 4 models: 2 configurations x 2 seeds, then the third with its 2 seeds
    assert plan_groups(configs, max_models=4) == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]]
    # fewer than one configuration's seeds: a group is never smaller than its seeds
    assert plan_groups(configs, max_models=1) == [[i, i + 1] for i in range(0, 12, 2)]
    assert plan_groups(configs, max_models=100) == plan_groups(configs) == [
        list(range(6)), list(range(6, 12))]


@pytest.mark.parametrize("estimator", ["svrg", "saga"])
def test_variance_reduced_runs_with_several_seeds_equal_them_alone(split, estimator):
    configs = [Config(optimizer=estimator, seed=s, epochs=1, batch_size=4000, lr=0.05)
               for s in (0, 1)]
    _each_equals_it_alone(configs, split, keys=())


@pytest.mark.parametrize("name", ["adamax", "radam", "rprop", "asgd", "lion",
                                  "sgd-schedulefree", "adamw-schedulefree", "prodigy",
                                  "dadapt-adam", "adafactor", "dadapt-sgd", "sps",
                                  "armijo", "muon"])
def test_a_new_rule_in_a_batch_of_four_equals_it_alone(split, name):
    """K = 4: the rule and momentum, each at seeds 0 and 1, trained as one batch (asgd
    averaging from step 5, so that its evaluation point is its average)."""
    hyper = {"t0": 5.0} if name == "asgd" else {}
    configs = [Config(optimizer=o, seed=s, epochs=1, batch_size=2000,
                      hyper=hyper if o == name else {})
               for s in (0, 1) for o in (name, "momentum")]
    assert plan_groups(configs) == [[0, 1, 2, 3]]
    if name in ("dadapt-adam", "muon"):
        # float32's last-digit differences between a seed's plain product (alone) and the
        # batched one are amplified: by dadapt-adam's d (its weights grow to ~4; 2.6e-5
        # apart, 6e-6 relative), by muon's bfloat16 Newton-Schulz, where one flipped
        # rounding moves a step by 0.4% (4.2e-4 apart); docs/optimisers.md says so. In float64:
        split = replace(split, **{f"X_{p}": getattr(split, f"X_{p}").double()
                                  for p in ("train", "val", "test")})
    _each_equals_it_alone(configs, split, ("val_loss",))


def test_asgd_answers_with_its_average(split):
    """The weights ASGD saves, and those validation sees, are its average: torch's ASGD
    fed the same mini-batch gradients (float64), its ``ax``."""
    config = Config(optimizer="asgd", lr=0.05, epochs=1, batch_size=4000,
                    hyper={"t0": 3.0, "lambd": 1e-3})
    (r,) = fit(config, split)
    X, y = split.X_train.double(), split.y_train
    W = torch.nn.Parameter(torch.zeros(784, 10, dtype=torch.float64))
    ref = torch.optim.ASGD([W], lr=0.05, t0=3.0, lambd=1e-3)
    for idx in batch_order(len(X), 4000, 0, 0, "cpu"):
        W.grad = gradient(W.detach(), X[idx], y[idx])
        ref.step()
    average = ref.state[W]["ax"]
    assert (average - W.detach()).abs().max().item() > 1e-3  # they differ...
    assert torch.allclose(torch.from_numpy(r.weights).double(), average, atol=1e-6)  # ...ours is ax
    val = cross_entropy(split.X_val.double() @ average, split.y_val).item()
    assert r.rows[0]["val_loss"] == pytest.approx(val, abs=1e-5)


def test_schedule_free_answers_at_x_and_refuses_a_schedule(split):
    """Validation and the saved weights are the evaluation point x; the per-step training
    metrics are those of y, where the gradients are taken. A schedule is refused."""
    from stochopt.errors import SettingError
    from stochopt.train import evaluate

    config = Config(optimizer="sgd-schedulefree", lr=0.5, epochs=1, batch_size=2000)
    carry: dict = {}
    (r,) = fit(config, split, carry=carry)
    x, y = carry["W"][0], carry["Wt"][0, 0].T
    assert (x - y).abs().max() > 1e-3
    assert r.weights == pytest.approx(x.numpy(), abs=1e-7)
    (val_loss,), _ = evaluate(x.unsqueeze(0), split.X_val, split.y_val)
    assert r.rows[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-6)
    for bad in ({"schedule": "exponential"}, {"warmup_epochs": 1.0}):
        with pytest.raises(SettingError, match="must be constant"):
            Config(optimizer="sgd-schedulefree", **bad).validate()


def test_run_ids_are_memoised_without_changing_them():
    """run_id is memoised on the raw values (a 36,000-run study asks for each many times):
    it must equal the stored formula, sha1 of the resolved config's JSON, which names the
    runs already on disk (an int given for a float setting counts as that float: lr=1 is the
    run lr=1.0 is); and a config changed after a first call must get its new id."""
    import hashlib
    import json
    from dataclasses import asdict

    def stored(c):
        r = asdict(c.resolved())
        for name in ("eval_every", "eval_points"):  # what is recorded, not how it trains:
            if not r[name]:  # left out at 0, so that the runs made before keep their ids
                del r[name]
        kinds = {n: s.kind for n, s in c.rule.settings().items()}
        for name in ("lr", "lr_decay", "warmup_epochs"):
            r[name] = float(r[name]) if isinstance(r[name], int) else r[name]
        r["hyper"] = {k: float(v) if kinds.get(k) is float and type(v) is int else v
                      for k, v in r["hyper"].items()}
        digest = hashlib.sha1(json.dumps(r, sort_keys=True).encode()).hexdigest()[:8]
        return f"{r['optimizer']}-lr{r['lr']:g}-bs{r['batch_size']}-s{r['seed']}-{digest}"

    configs = [Config(), Config(lr=1), Config(lr=1.0), Config(optimizer="adam", seed=3),
               Config(optimizer="momentum", hyper={"nesterov": True, "momentum": 0.5}),
               Config(optimizer="muon", schedule="cosine", epochs=3, batch_size=7),
               Config(optimizer="adamw", hyper={"weight_decay": 0})]
    for c in configs:
        assert c.run_id == stored(c) and c.run_id == c.run_id
    assert configs[1].run_id == configs[2].run_id  # one run, however its lr was typed
    c = Config(lr=0.1)
    before = c.run_id
    c.lr = 0.2
    assert c.run_id == stored(c) != before


def test_a_runs_seconds_are_its_share_plus_its_own_update():
    """The split, by hand: wall 10 s, two seeds, two blocks of one configuration each whose
    updates took 1 s and 3 s: the shared 6 s over the four models, 1.5 each, plus each
    block's update over its two models (0.5 and 1.5); together the wall time."""
    from stochopt.train import own_seconds

    seconds = own_seconds(10.0, [1.0, 3.0], [slice(0, 1), slice(1, 2)], S=2, M=2)
    assert seconds == pytest.approx([2.0, 3.0, 2.0, 3.0])
    assert sum(seconds) == pytest.approx(10.0)


def test_in_a_batch_of_sgd_and_muon_each_run_has_its_own_seconds(split):
    """Muon's update (Newton-Schulz) costs several times sgd's: in one batch their seconds
    differ by their updates, and the runs' seconds sum to the batch's wall time."""
    small = Split(split.X_train[:6400], split.y_train[:6400], split.X_val[:100],
                  split.y_val[:100], split.X_test[:100], split.y_test[:100])
    sgd, muon = fit([Config("sgd", epochs=2, batch_size=64),
                     Config("muon", epochs=2, batch_size=64)], small)
    for a, b in zip(sgd.rows, muon.rows, strict=True):
        assert a["batch_seconds"] == b["batch_seconds"]
        assert a["seconds"] + b["seconds"] == pytest.approx(a["batch_seconds"], rel=1e-9)
        assert b["seconds"] > a["seconds"]


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "asgd"])
def test_evaluation_points_change_no_number_of_training(optimizer, split):
    """With points inside the epochs (every 7 steps and 5 log-spaced ones) the epoch-end rows,
    the weights and the test metrics equal a run without them, bit for bit."""
    small = Split(split.X_train[:3000], split.y_train[:3000], split.X_val[:300],
                  split.y_val[:300], split.X_test[:300], split.y_test[:300])
    base = Config(optimizer, epochs=3, batch_size=64, seed=1, hyper={"t0": 5.0}
                  if optimizer == "asgd" else {})
    plain, = fit(base, small, f_star=[0.1], noise_scale=True)
    pointed, = fit(replace(base, eval_every=7, eval_points=5), small, f_star=[0.1],
                   noise_scale=True)
    timing = {"seconds", "batch_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in plain.rows] == \
           [{k: v for k, v in r.items() if k not in timing} for r in pointed.rows]
    assert (plain.weights == pointed.weights).all() and plain.test_acc == pointed.test_acc
    steps = math.ceil(3000 / 64)
    # 141 steps; log-spaced: 141^(j/4) for j = 0..4 is 1, 3.45, 11.9, 40.9, 141
    expected = sorted({*range(7, 3 * steps + 1, 7), 1, 3, 12, 41, 141} - {steps, 2 * steps,
                                                                        3 * steps})
    assert [p["steps"] for p in pointed.points] == expected
    assert all(math.isfinite(p["val_acc"]) and math.isfinite(p["noise_scale"])
               and math.isfinite(p["suboptimality"]) and math.isnan(p["train_loss"])
               for p in pointed.points)


def test_time_to_target_at_eval_every_equals_a_brute_force_recomputation(split):
    """sgd at a constant lr, batch 250, evaluated every 3 steps: the first point whose
    validation accuracy reaches the target, recomputed here from a plain loop's weights
    after every step (torch.optim.SGD on the same batches), is runs_table's."""
    from stochopt.study.analysis import Targets, runs_table

    small = Split(split.X_train[:5000], split.y_train[:5000], split.X_val[:2000],
                  split.y_val[:2000], split.X_test[:100], split.y_test[:100])
    config = Config("sgd", lr=0.5, epochs=2, batch_size=250, schedule="constant",
                    eval_every=3)
    record, = fit(config, small)
    W = torch.zeros(784, 10, requires_grad=True)
    opt = torch.optim.SGD([W], lr=0.5)
    accuracy, t = {}, 0
    for epoch in range(2):
        for idx in batch_order(5000, 250, 0, epoch, "cpu"):
            opt.zero_grad()
            F.cross_entropy(small.X_train[idx] @ W, small.y_train[idx]).backward()
            opt.step()
            t += 1
            with torch.no_grad():
                accuracy[t] = 100 * (small.X_val @ W).argmax(1).eq(small.y_val).float().mean()
    evaluated = [t for t in accuracy if t % 3 == 0 or t % 20 == 0]  # points and epoch ends
    target = float(accuracy[evaluated[len(evaluated) // 2]]) - 0.01  # reached mid-run
    first = next(t for t in evaluated if accuracy[t] >= target)
    assert first not in (20, 40) and first > 3  # a point inside an epoch, not the first
    (row,) = runs_table([record], Targets(val_acc=target))
    assert row["steps_to_target"] == first
    hit = next(r for r in record.timeline() if r["steps"] == first)
    assert row["seconds_to_target"] == hit["elapsed"] and hit["epoch_end"] == 0


@pytest.mark.parametrize("batch_size", [32, 128])
def test_one_run_trains_to_the_same_bits_on_one_thread_and_on_two(split, batch_size):
    """A one-model run at batch <= 128 does its products on one thread (faster there, see
    ONE_THREAD_BATCH): its weights and per-step metrics are then the same bit for bit
    whatever torch's thread count, which a product split between threads does not give."""
    small = Split(split.X_train[:4000], split.y_train[:4000], split.X_val[:500],
                  split.y_val[:500], split.X_test[:10], split.y_test[:10])
    config = Config(optimizer="momentum", batch_size=batch_size, epochs=2)
    runs = []
    for n in (2, 1):
        with torch_threads(n):
            runs.append(fit(config, small)[0])
            assert torch.get_num_threads() == n  # the loop gives the threads back
    two, one = runs
    assert (two.weights == one.weights).all()
    assert [r["train_loss"] for r in two.rows] == [r["train_loss"] for r in one.rows]


@pytest.mark.parametrize("seeds, serial", [(1, True), (4, True), (5, False)])
def test_adams_square_roots_are_taken_on_one_thread_for_up_to_four_models(
        split, monkeypatch, seeds, serial):
    """Adam's roots of v for K = 1 and 4 models (7,840 and 31,360 entries) are taken on one
    thread, where MKL's vector math does not split them (split, they differed between
    processes on an Intel CPU); K = 5 keeps torch's two threads; the process keeps its
    threads, and K = 1's run is the same bit for bit as on a process with one thread."""
    seen = []
    root = torch.sqrt

    def spy(x, *args, **kwargs):
        if x.numel() >= 7840:
            seen.append(torch.get_num_threads())
        return root(x, *args, **kwargs)

    monkeypatch.setattr(torch, "sqrt", spy)
    small = Split(split.X_train[:640], split.y_train[:640], split.X_val[:100],
                  split.y_val[:100], split.X_test[:10], split.y_test[:10])
    configs = [Config(optimizer="adam", batch_size=64, epochs=1, seed=s) for s in range(seeds)]
    with torch_threads(2):
        two = fit(configs, small)
        assert torch.get_num_threads() == 2
    assert seen == ([1] * 10 if serial else [])  # K = 5: x.sqrt() itself, on two threads
    if seeds == 1:
        with torch_threads(1):
            one = fit(configs, small)
        assert (two[0].weights == one[0].weights).all()


@pytest.mark.parametrize("n", [1, 2047, 2048, 7840, 32767, 32768, 100000])
def test_the_rules_square_root_is_torchs_bit_for_bit(n):
    """optim.base.sqrt and sqrt_ give x.sqrt()'s values at every size, on one thread or
    not, in place for sqrt_; a number's root is math.sqrt's."""
    from stochopt.optim.base import sqrt, sqrt_

    x = torch.rand(n, generator=torch.Generator().manual_seed(n)) * 10.0 ** torch.randint(
        -40, 3, (n,), generator=torch.Generator().manual_seed(n + 1))
    with torch_threads(2):
        expected = x.sqrt()
        assert torch.equal(sqrt(x), expected)
        y = x.clone()
        assert sqrt_(y) is y and torch.equal(y, expected)
        assert torch.get_num_threads() == 2
    assert sqrt(2.0) == math.sqrt(2.0)


def _subnormals(state) -> int:
    """Nonzero values below the smallest normal number, over a rule state's tensors."""
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return sum(int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum()) for t in tensors)


def _one_epoch(split, monkeypatch, optimizer, flushing):
    """One epoch at batch 32 (long enough for a buffer to decay into the subnormal range)
    and the rule's state after it; ``flushing=False``: the loop's flushing turned off."""
    import contextlib

    import stochopt.train as train

    with monkeypatch.context() as m:
        if not flushing:
            m.setattr(train, "flushed_subnormals", lambda *a: contextlib.nullcontext())
        carry: dict = {}
        (r,) = fit(Config(optimizer=optimizer, epochs=1, batch_size=32), split, carry=carry)
    assert not train._flushing()  # the caller's mode is given back
    timing = {"seconds", "batch_seconds"}
    return r.weights, [{k: v for k, v in row.items() if k not in timing} for row in r.rows], \
        carry["states"][0]


@pytest.mark.parametrize("optimizer", sorted(n for n, r in RULES.items() if r.linear))
def test_a_linear_rule_trains_to_the_same_numbers_with_subnormals_flushed(
        split, monkeypatch, optimizer):
    """Rule.linear: the loop flushes subnormal values to zero (faster), and the weights,
    losses and accuracies are those of the same run keeping them, bit for bit; a momentum
    buffer of a pixel the batches rarely light decays into that range within an epoch."""
    flushed, rows, state = _one_epoch(split, monkeypatch, optimizer, flushing=True)
    kept, kept_rows, kept_state = _one_epoch(split, monkeypatch, optimizer, flushing=False)
    assert _subnormals(state) == 0
    if "m" in kept_state:  # a buffer: it did decay into the range, and was flushed
        assert _subnormals(kept_state) > 0
    assert (flushed == kept).all() and rows == kept_rows


def test_a_batch_with_a_rule_that_is_not_linear_keeps_its_subnormals(split, monkeypatch):
    """Adam divides by sqrt(v) (eps may be 0) and Rprop takes signs: a subnormal is a
    step for them, so a batch holding one is trained as torch.optim trains, subnormals
    and all."""
    _, _, state = _one_epoch(split, monkeypatch, "adam", flushing=True)
    assert not RULES["adam"].linear and _subnormals(state) > 0


def test_data_with_subnormal_features_is_not_flushed():
    """DAZ would read a subnormal feature as 0: such data, sparse rows (not looked into) and
    a batch with a rule that is not linear train with the CPU's default."""
    from stochopt.train import _flushing, flushed_subnormals

    X = torch.ones(50, 4)
    configs = [Config(optimizer="momentum")]
    with flushed_subnormals(configs, X):
        assert _flushing()
    X[3, 2] = 1e-40
    with flushed_subnormals(configs, X):
        assert not _flushing()
    with flushed_subnormals(configs, torch.ones(50, 4).to_sparse()):  # rows not looked into
        assert not _flushing()
    with flushed_subnormals([Config(optimizer="momentum"), Config(optimizer="adam")],
                            torch.ones(50, 4)):
        assert not _flushing()
    assert not _flushing()
