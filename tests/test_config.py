"""Range checks of the typed configs: each out-of-range value is refused with one line naming the field and its interval."""
import pytest

from algorithms.config import FinetuneConfig
from algorithms.pipeline_config import CriticPretrainConfig, IQLPretrainConfig

CASES = [
    (FinetuneConfig, "gamma", 0.0, "gamma must be in (0, 1], got 0.0"),
    (FinetuneConfig, "gamma", 1.5, "gamma must be in (0, 1], got 1.5"),
    (FinetuneConfig, "gae_lambda", -0.1, "gae_lambda must be in [0, 1], got -0.1"),
    (FinetuneConfig, "iql_expectile", 1.0, "iql_expectile must be in (0, 1), got 1.0"),
    (FinetuneConfig, "mc_tolerance", 1.0, "mc_tolerance must be in (0, 1), got 1.0"),
    (IQLPretrainConfig, "expectile", 0.0, "expectile must be in (0, 1), got 0.0"),
    (IQLPretrainConfig, "gamma", 2.0, "gamma must be in (0, 1], got 2.0"),
    (IQLPretrainConfig, "target_update_rate", 0.0, "target_update_rate must be in (0, 1], got 0.0"),
    (CriticPretrainConfig, "gamma", -1.0, "gamma must be in (0, 1], got -1.0"),
]


@pytest.mark.parametrize("cls,name,value,message", CASES, ids=[f"{c[0].__name__}.{c[1]}={c[2]}" for c in CASES])
def test_out_of_range_value_is_refused_with_its_interval(cls, name, value, message):
    with pytest.raises(ValueError) as err:
        cls(**{name: value})
    assert str(err.value) == message


@pytest.mark.parametrize("cls,name,value", [(FinetuneConfig, "gamma", 1.0), (FinetuneConfig, "gae_lambda", 0.0),
                                            (FinetuneConfig, "gae_lambda", 1.0), (IQLPretrainConfig, "target_update_rate", 1.0)])
def test_closed_ends_are_accepted(cls, name, value):
    assert getattr(cls(**{name: value}), name) == value
