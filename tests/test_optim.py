import pytest

from embedlab.errors import ConfigError
from embedlab.objectives.optim import (
    check_schedule,
    linear_warmup_constant,
    linear_warmup_decay,
)


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [linear_warmup_decay(step, warmup=2, total=6) for step in range(7)]
    assert factors == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_constant_schedule_warms_up_then_holds_the_full_rate():
    assert [linear_warmup_constant(step, warmup=2, total=6) for step in range(7)] == [0.0, 0.5, 1, 1, 1, 1, 1]
    assert [linear_warmup_constant(step, warmup=0, total=3) for step in range(3)] == [1, 1, 1]


def test_an_unknown_schedule_fails_naming_the_known_ones():
    with pytest.raises(ConfigError, match="optim.schedule must be one of linear, constant, got 'cosine'"):
        check_schedule("cosine")
