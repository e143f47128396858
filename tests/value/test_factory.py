"""make_value_estimator: every accepted form of value_type, the defaults, the errors."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn

from ppokit.value.estimators import (
    DEFAULT_GAMMA,
    DEFAULT_LMBDA,
    GAE,
    MultiAgentGAE,
    TD0Estimate,
    TD1Estimate,
    TDLambdaEstimate,
    ValueEstimators,
    VTrace,
    make_value_estimator,
)


def critic():
    return TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])


def actor():
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(nn.Linear(3, 2), NormalParamExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"], distribution_class=torch.distributions.Normal
        ),
    )


EXPECTED = {
    "GAE": GAE,
    "TDLambda": TDLambdaEstimate,
    "TD0": TD0Estimate,
    "TD1": TD1Estimate,
    "MAGAE": MultiAgentGAE,
    "VTrace": VTrace,
}


def test_defaults_are_torchrls():
    assert (DEFAULT_GAMMA, DEFAULT_LMBDA) == (0.99, 0.95)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_form_of_the_name(name):
    cls = EXPECTED[name]
    member = ValueEstimators[name]
    # (TorchRL's enum member builds TorchRL's class: tests/value/test_estimators.py)
    forms = [member, member.value, name, name.lower(), name.upper()]
    for form in forms:
        est = make_value_estimator(form, value_network=critic(), actor_network=actor())
        assert type(est) is cls, form
        assert est.gamma == DEFAULT_GAMMA
        if isinstance(est, GAE | TDLambdaEstimate):
            assert est.lmbda == DEFAULT_LMBDA
        else:
            assert not hasattr(est, "lmbda")


def test_hyperparameters_override_defaults():
    est = make_value_estimator("gae", value_network=None, gamma=0.5, average_gae=True)
    assert (est.gamma, est.lmbda, est.average_gae) == (0.5, DEFAULT_LMBDA, True)


def test_actor_network_only_reaches_estimators_that_take_it():
    pi = actor()
    assert make_value_estimator("vtrace", value_network=None, actor_network=pi).actor_network is pi
    assert not hasattr(
        make_value_estimator("gae", value_network=None, actor_network=pi), "actor_network"
    )


def test_a_class_is_built_with_the_defaults_it_takes():
    est = make_value_estimator(TD1Estimate, value_network=None, gamma=0.8)
    assert isinstance(est, TD1Estimate) and est.gamma == 0.8
    assert make_value_estimator(MultiAgentGAE, value_network=None).lmbda == DEFAULT_LMBDA


def test_torchrl_class_and_instance_are_accepted():
    torchrl_value = pytest.importorskip("torchrl.objectives.value")
    net = critic()
    est = make_value_estimator(torchrl_value.GAE, value_network=net)
    assert type(est) is torchrl_value.GAE and est.value_network is net
    assert float(est.gamma) == pytest.approx(DEFAULT_GAMMA)
    assert float(est.lmbda) == pytest.approx(DEFAULT_LMBDA)
    instance = torchrl_value.TD0Estimator(gamma=0.9, value_network=net)
    assert make_value_estimator(instance, value_network=None) is instance


def test_instance_is_returned_and_gets_a_missing_value_network():
    net = critic()
    est = GAE(gamma=0.9, lmbda=0.9, value_network=None)
    assert make_value_estimator(est, value_network=net) is est
    assert est.value_network is net
    other = critic()
    assert make_value_estimator(est, value_network=other).value_network is net  # kept
    with pytest.raises(ValueError, match=r"instance was given together with hyperparameters"):
        make_value_estimator(est, value_network=None, gamma=0.5)


def test_errors():
    with pytest.raises(ValueError, match=r"Unknown value estimator 'retrace'; expected a name in"):
        make_value_estimator("retrace", value_network=None)
    with pytest.raises(TypeError, match=r"Unsupported value estimator 42 \(int\)"):
        make_value_estimator(42, value_network=None)
    with pytest.raises(TypeError, match=r"VTrace scores the stored actions.*actor_network="):
        make_value_estimator("vtrace", value_network=None)
    with pytest.raises(TypeError, match=r"VTrace needs actor_network=<the current policy>"):
        VTrace(gamma=0.9, actor_network=critic(), value_network=None)
    with pytest.raises(ValueError, match=r"rho_thresh must be a single positive number"):
        VTrace(gamma=0.9, actor_network=actor(), value_network=None, rho_thresh=0.0)
    with pytest.raises(TypeError, match=r"agent_dim must be an int"):
        MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=None, agent_dim=1.0)
