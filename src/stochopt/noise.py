"""The gradient noise scale of McCandlish et al. (2018), measured exactly.

With per-example gradients ``g_i`` of the cross-entropy and their mean ``G`` over the N
training examples, the noise of a mini-batch gradient is set by the covariance ``Sigma``:

    tr(Sigma) = (1/N) sum_i |g_i|^2 - |G|^2          B_simple = tr(Sigma) / |G|^2

For softmax regression ``g_i = x_i (p_i - y_i)^T`` is an outer product, so
``|g_i|^2 = |x_i|^2 |p_i - y_i|^2``: the sum needs no per-example gradient, only the
residuals that the full gradient needs anyway. ``B_simple`` is the batch size at which a
mini-batch gradient's noise equals the signal: well below it, doubling the batch roughly
halves the steps needed; well above it, it buys little (McCandlish et al.'s B_crit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .model import cross_entropy, one_hot

CHUNK = 8192  # examples per pass: bounds the K x chunk x C residuals held at once


@dataclass(frozen=True)
class NoiseScale:
    b_simple: float
    grad_norm_sq: float
    trace_sigma: float
    n: int

    def to_json(self) -> dict[str, float]:
        return asdict(self)


class FullPass:
    """:func:`full_pass` over one data set (X, y), called once per epoch by a fit: what
    belongs to the data, not to the weights, is made once. That is each chunk's squared row
    norms ``|x_i|^2`` and one float64 buffer the chunks are copied into for the float64
    product (a fresh 51 MB ``Xc.double()`` per chunk, its pages zeroed by the kernel each
    time, took 40% of a pass over MNIST). The numbers are those of a fresh pass, bit for bit.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y
        self.norms: list[torch.Tensor] | None = None  # |x_i|^2 per chunk, at the first noise
        self.buffer: torch.Tensor | None = None

    def _double(self, Xc: torch.Tensor) -> torch.Tensor:
        if Xc.layout != torch.strided or Xc.dtype == torch.float64:  # sparse rows, or no copy
            return Xc.double()
        if self.buffer is None:
            self.buffer = torch.empty(min(CHUNK, len(self.X)), Xc.shape[1],
                                      dtype=torch.float64, device=Xc.device)
        return self.buffer[:len(Xc)].copy_(Xc)

    @torch.no_grad()
    def __call__(self, W: torch.Tensor, noise: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        Wt = W.mT
        K, C, _ = Wt.shape
        X = self.X
        loss = torch.zeros(K, dtype=torch.float64, device=X.device)
        # G sums N per-example gradients that nearly cancel (|G|^2 is the small term of
        # B_simple's ratio): in float64, so that its last digits, and B_simple's, do not
        # depend on how the BLAS splits the sum between threads (a float32 sum moves
        # B_simple by 1e-7 of itself between one thread and two)
        G = torch.zeros_like(Wt, dtype=torch.float64) if noise else None
        sq = torch.zeros(K, dtype=torch.float64, device=X.device) if noise else None
        chunks = list(zip(X.split(CHUNK), self.y.split(CHUNK), strict=True))
        if noise and self.norms is None:
            self.norms = [(Xc * Xc).sum(-1) for Xc, _ in chunks]
        for c, (Xc, yc) in enumerate(chunks):
            Zt = torch.matmul(Wt, Xc.T)  # (K, C, n), classes first
            loss += cross_entropy(Zt.mT, yc).double() * len(Xc)
            if noise:
                assert G is not None and sq is not None and self.norms is not None
                Rt = torch.softmax(Zt, dim=-2).sub_(one_hot(yc, C, X.dtype).T)
                G += torch.matmul(Rt.double(), self._double(Xc))
                sq += ((Rt * Rt).sum(-2) * self.norms[c]).sum(-1).double()
        n = len(X)
        if not noise:
            return loss / n, None, None
        assert G is not None and sq is not None
        G /= n
        return loss / n, (G * G).sum((-2, -1)), sq / n


def full_pass(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, noise: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """For W (K, d, C): the mean cross-entropy over (X, y) of each model, and with
    ``noise`` its ``|G|^2`` and ``(1/N) sum_i |g_i|^2``, from one pass over the data."""
    return FullPass(X, y)(W, noise)


def noise_scales(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> list[NoiseScale]:
    """B_simple, |G|^2 and tr(Sigma) of each of the K models W (K, d, C) (or one (d, C))."""
    W = W if W.dim() == 3 else W.unsqueeze(0)
    _, gsq, sq = full_pass(W, X, y)
    assert gsq is not None and sq is not None
    return [NoiseScale(b_simple=(s - g) / g if g > 0 else float("inf"), grad_norm_sq=g,
                       trace_sigma=s - g, n=len(X))
            for g, s in zip(gsq.tolist(), sq.tolist(), strict=True)]
