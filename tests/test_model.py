"""The exercise's math against torch's own: F.cross_entropy, autograd, finite differences."""

import pytest
import torch
import torch.nn.functional as F
from conftest import torch_threads

from stochopt.model import SeedBatch, accuracy, cross_entropy, gradient, loss, one_hot


def _problem(n=50, d=20, c=10, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    W = torch.randn(d, c, generator=g, dtype=dtype)
    return W, X, y


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_loss_equals_torch_cross_entropy(scale):
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(200, 10, generator=g) * scale
    y = torch.randint(0, 10, (200,), generator=g)
    ours, ref = cross_entropy(Z, y), F.cross_entropy(Z, y)
    assert torch.isfinite(ours)
    assert abs(ours.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item()))


def test_loss_broadcasts_over_configurations():
    W, X, y = _problem()
    Wk = torch.stack([W, 2 * W, -W])
    ours = loss(Wk, X, y)
    assert ours.shape == (3,)
    for k in range(3):
        assert torch.allclose(ours[k], F.cross_entropy(X @ Wk[k], y), atol=1e-12)


def test_one_hot_matches_torch():
    y = torch.tensor([3, 0, 9, 3])
    assert torch.equal(one_hot(y), F.one_hot(y, 10).float())


def test_gradient_equals_autograd_float64():
    W, X, y = _problem()
    Wr = W.clone().requires_grad_(True)
    F.cross_entropy(X @ Wr, y).backward()
    assert (gradient(W, X, y) - Wr.grad).abs().max().item() <= 1e-10


def test_gradient_equals_exercise_formula():
    W, X, y = _problem()
    Ystar = one_hot(y, dtype=X.dtype)
    exercise = -(X.T @ (Ystar - torch.softmax(X @ W, dim=1))) / len(X)
    assert torch.allclose(gradient(W, X, y), exercise, atol=1e-14)


def test_gradient_matches_central_finite_differences():
    W, X, y = _problem(n=30, d=6)
    G = gradient(W, X, y)
    h = 1e-6
    for i, j in [(0, 0), (2, 5), (5, 9), (3, 1)]:
        E = torch.zeros_like(W)
        E[i, j] = h
        fd = (loss(W + E, X, y) - loss(W - E, X, y)) / (2 * h)
        assert abs(fd.item() - G[i, j].item()) <= 1e-8


def test_gradient_of_k_models_is_k_gradients():
    W, X, y = _problem()
    Wk = torch.stack([W, 0.5 * W])
    Gk = gradient(Wk, X, y)  # one batched product for both
    for k in range(2):
        assert torch.allclose(Gk[k], gradient(Wk[k], X, y), atol=1e-14)


def test_extreme_logits_give_finite_loss_and_gradient():
    W, X, y = _problem(dtype=torch.float32)
    W = W * 1e4
    assert torch.isfinite(loss(W, X, y))
    assert torch.isfinite(gradient(W, X, y)).all()


def test_accuracy_counts_argmax_hits():
    Z = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    y = torch.tensor([1, 0, 0, 1])
    assert accuracy(Z, y).item() == 0.5


def test_accuracy_of_class_major_logits_equals_argmax_and_ties_go_to_the_lowest_class():
    g = torch.Generator().manual_seed(0)
    Zt = torch.randint(0, 3, (2, 10, 50), generator=g).float()  # small integers: many ties
    y = torch.randint(0, 10, (50,), generator=g)
    Z = Zt.mT  # (2, 50, 10), classes first in memory, as logits() returns it
    assert torch.equal(accuracy(Z, y), (Z.contiguous().argmax(-1) == y).float().mean(-1))
    ties = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]).T.contiguous().T  # class-major
    assert ties.stride() == (1, 2)
    assert accuracy(ties, torch.tensor([0, 1])).item() == 1.0
    assert accuracy(ties, torch.tensor([1, 2])).item() == 0.0


def test_gradient_derivation_equals_autograd_and_central_differences(split):
    """docs/gradient.md's numbers: on 256 MNIST images in float64, the derived gradient
    equals autograd to 1e-10 and central differences to 1e-6."""
    X, y = split.X_train[:256].double(), split.y_train[:256]
    W = 0.01 * torch.randn(X.shape[1], 10, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(3))
    Wr = W.clone().requires_grad_(True)
    F.cross_entropy(X @ Wr, y).backward()
    G = gradient(W, X, y)
    assert (G - Wr.grad).abs().max().item() <= 1e-10
    h = 1e-6
    for i, j in [(300, 0), (405, 3), (550, 7), (100, 9)]:  # pixels lit in these images
        E = torch.zeros_like(W)
        E[i, j] = h
        fd = (loss(W + E, X, y) - loss(W - E, X, y)) / (2 * h)
        assert abs(fd.item() - G[i, j].item()) <= 1e-6
        assert G[i, j].item() != 0  # a coordinate that tests something


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("S", [1, 3])
@pytest.mark.parametrize("B", [64, 100, 7])
@pytest.mark.parametrize("tiny", [False, True], ids=["", "near-subnormal residuals"])
def test_seed_batch_products_equal_plain_products_bit_for_bit(dtype, S, B, tiny):
    """The step's products (views made once) give the bits of the plain products
    ``W X_B^T`` and, for the gradient, ``((1/B) R) X_B`` when B is a power of two (exact),
    else ``(R X_B) (1/B)``: per seed's ``mm`` for one seed; for several, the same batched
    ``bmm`` call (MKL's batched kernel may sum in another order than its ``mm`` on some
    CPUs, so a seed in a batch of seeds equals itself alone to rounding, not bit for bit).
    Near the subnormal range too, which an Adam run reaches: BLAS's alpha, used for 1/B
    before, gave other bits there (two seeds at lr 0.225, batch 64, one epoch: the batch
    5.6e-37 from each run alone)."""
    g = torch.Generator().manual_seed(B)
    M, C, d = 4, 10, 784
    Xb = torch.rand(S, B, d, generator=g, dtype=dtype)
    Wt = torch.randn(S, M, C, d, generator=g, dtype=dtype)
    Rt = torch.randn(S, M, C, B, generator=g, dtype=dtype) * (2.0**-120 if tiny else 1.0)
    batch = SeedBatch(Xb)
    Z, G = batch.logits(Wt), batch.gradient(Rt, 1 / B)
    exact = B & (B - 1) == 0
    R = Rt * (1 / B) if exact else Rt
    if S == 1:
        assert torch.equal(Z[0], torch.mm(Wt[0].reshape(M * C, d), Xb[0].T).view(M, C, B))
        plain = torch.mm(R[0].reshape(M * C, B), Xb[0]).view(M, C, d)
    else:
        assert torch.equal(Z, torch.bmm(Wt.reshape(S, M * C, d), Xb.mT).view(S, M, C, B))
        plain = torch.bmm(R.reshape(S, M * C, B), Xb).view(S, M, C, d)
    if not exact:
        plain.mul_(1 / B)
    assert torch.equal(G, plain.view_as(G))
    for s in range(S):  # each seed's own product, within the rounding bound of a d-term sum
        alone = torch.mm(Wt[s].reshape(M * C, d), Xb[s].T).view(M, C, B)
        bound = d * torch.finfo(dtype).eps * (Wt[s].abs() @ Xb[s].abs().T)
        assert ((Z[s] - alone).abs() <= bound).all()


@pytest.mark.parametrize("B", [32, 128, 256])
def test_one_models_products_run_on_one_thread_up_to_batch_128(B):
    """One model's products at B <= 128 are those of torch.mm on one thread, bit for bit,
    while the process keeps two; larger batches keep the threads (and their bits)."""
    g = torch.Generator().manual_seed(B)
    Xb = torch.rand(1, B, 784, generator=g)
    Wt = torch.randn(1, 1, 10, 784, generator=g)
    Rt = torch.randn(1, 1, 10, B, generator=g)
    with torch_threads(2):
        Z, G = SeedBatch(Xb).logits(Wt), SeedBatch(Xb).gradient(Rt, 1 / B)
        assert torch.get_num_threads() == 2
    with torch_threads(1 if B <= 128 else 2):
        assert torch.equal(Z[0, 0], torch.mm(Wt[0, 0], Xb[0].T))
        assert torch.equal(G[0, 0], torch.mm(Rt[0, 0], Xb[0]).mul_(1 / B))
