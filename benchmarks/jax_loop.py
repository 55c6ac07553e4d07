"""The fastest thing a performance-minded engineer writes in JAX for the exercise: a whole
epoch of momentum-SGD jit-compiled as one ``lax.scan``, with the exercise's post-step metrics
(the batch's loss and accuracy after the update), optax's ``trace`` as the momentum buffer
(torch's convention, ``m <- mu m + g``), the lr handed in per epoch (the schedule's x0.9).
``vmap`` over K models gives the sweep (each its own lr, one data order), as stochopt's
K-at-once batch does.

Only the benchmarks import this (``pip install -e ".[bench]"``); :func:`available` says why
not when JAX or optax is missing. The scan runs the epoch's full batches; the timings scale
to the epoch's ``ceil(N / B)`` steps.
"""

from __future__ import annotations

import importlib.util

import numpy as np


def available() -> str | None:
    """None when JAX and optax import, else the line to print instead of their column."""
    missing = [m for m in ("jax", "optax") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"skipped: {' and '.join(missing)} not installed "
                "(pip install -e \".[bench]\" adds them)")
    return None


class JaxEpoch:
    """``epoch(lr)`` runs one epoch of K models (K=None: one model, no vmap) at batch B
    and blocks until it is done; ``compile_seconds`` is what the first call paid."""

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int, K: int | None = None,
                 momentum: float = 0.9, seed: int = 0) -> None:
        import time

        import jax
        import jax.numpy as jnp
        import optax

        self.jax, self.jnp = jax, jnp
        N, d = X.shape
        C = int(y.max()) + 1
        self.N, self.B = N, batch_size
        self.batches = N // batch_size
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        trace = optax.trace(decay=momentum)

        def step(W, m, xb, yb, lr):
            Z = xb @ W
            g = xb.T @ (jax.nn.softmax(Z, axis=-1) - jax.nn.one_hot(yb, C, dtype=Z.dtype))
            update, m = trace.update(g / batch_size, m)
            W = W - lr * update
            Z = xb @ W  # the exercise's metrics, of the updated model
            loss = jnp.mean(jax.nn.logsumexp(Z, axis=-1) -
                            jnp.take_along_axis(Z, yb[:, None], axis=1)[:, 0])
            return W, m, loss, jnp.mean(jnp.argmax(Z, axis=-1) == yb)

        one = step if K is None else jax.vmap(step, in_axes=(0, 0, None, None, 0))

        @jax.jit
        def epoch(W, m, perm, lr):
            def body(carry, idx):
                W, m, loss, acc = one(*carry, Xj[idx], yj[idx], lr)
                return (W, m), (loss, acc)

            (W, m), (loss, acc) = jax.lax.scan(
                body, (W, m), perm[:self.batches * batch_size].reshape(self.batches, -1))
            return W, m, loss.mean(0), acc.mean(0)

        shape = (d, C) if K is None else (K, d, C)
        self.W = jnp.zeros(shape, dtype=Xj.dtype)
        self.m = trace.init(self.W)
        self._epoch = epoch
        self._rng = np.random.default_rng(seed)
        self.lr = 0.1 if K is None else jnp.linspace(0.01, 0.1, K).reshape(K, 1, 1)
        started = time.perf_counter()
        self.run(self.lr)
        self.compile_seconds = time.perf_counter() - started

    def run(self, lr) -> tuple[float, float]:
        """One epoch; the mean post-step loss and accuracy of the first model."""
        perm = self.jnp.asarray(self._rng.permutation(self.N))
        self.W, self.m, loss, acc = self._epoch(self.W, self.m, perm, lr)
        self.jax.block_until_ready(self.W)
        return float(np.ravel(loss)[0]), float(np.ravel(acc)[0])

    def epoch_seconds(self) -> float:
        """Seconds of one epoch of ``ceil(N / B)`` steps (timed on the full batches)."""
        import time

        started = time.perf_counter()
        self.run(self.lr)
        return (time.perf_counter() - started) * -(-self.N // self.B) / self.batches
