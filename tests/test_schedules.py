"""Every schedule's value against its closed form."""

import math

import pytest
import torch

from stochopt.errors import StochoptError
from stochopt.optim.schedules import make_schedule


@pytest.mark.parametrize("e", [0, 0.5, 1, 2.99, 3, 7.25, 9])
def test_closed_forms(e):
    assert make_schedule("constant")(e) == 1
    assert make_schedule("exponential")(e) == pytest.approx(0.9 ** math.floor(e))
    assert make_schedule("exponential", 0.5)(e) == pytest.approx(0.5 ** math.floor(e))
    assert make_schedule("step", 0.1, step_size=3)(e) == pytest.approx(0.1 ** (int(e) // 3))
    assert make_schedule("cosine", None, epochs=10)(e) == pytest.approx(
        (1 + math.cos(math.pi * e / 10)) / 2)
    assert make_schedule("cosine", 0.1, epochs=10)(e) == pytest.approx(
        0.1 + 0.9 * (1 + math.cos(math.pi * e / 10)) / 2)
    assert make_schedule("inverse-time", 0.5)(e) == pytest.approx(1 / (1 + 0.5 * e))
    warm = make_schedule("exponential", 0.9, warmup_epochs=2)(e)
    assert warm == pytest.approx(0.9 ** math.floor(e) * (0.01 + 0.99 * min(1, e / 2)))


def test_the_exercise_schedule_by_epoch():
    s = make_schedule("exponential")
    assert [0.1 * s(e) for e in range(4)] == pytest.approx([0.1, 0.09, 0.081, 0.0729])


def test_tensor_parameters_broadcast_over_configurations():
    gamma = torch.tensor([0.9, 0.5]).view(2, 1, 1)
    values = make_schedule("exponential", gamma)(3)
    assert values.shape == (2, 1, 1)
    assert values.flatten().tolist() == pytest.approx([0.729, 0.125])


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(StochoptError, match="choose one of constant, exponential"):
        make_schedule("wavy")
