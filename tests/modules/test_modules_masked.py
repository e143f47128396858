"""MaskedCategorical: hand-worked numbers, TorchRL 0.14.1's numbers, bad masks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ppokit.modules.distributions import Categorical, MaskedCategorical, deferred_param_checks


def _torchrl_masked_categorical() -> type:
    # TorchRL is the numeric reference only; the tensordict-0.15 run has no TorchRL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("torchrl.modules").MaskedCategorical


# logits log [1, 3, 5], action 2 invalid: p = [1, 3] / 4 = [0.25, 0.75, 0]
LOGITS = torch.tensor([1.0, 3.0, 5.0]).log()
MASK = torch.tensor([True, True, False])


def test_probabilities_log_probs_and_entropy_by_hand():
    d = MaskedCategorical(logits=LOGITS, mask=MASK)
    torch.testing.assert_close(d.probs, torch.tensor([0.25, 0.75, 0.0]))
    lp = d.log_prob(torch.tensor([0, 1, 2]))  # a sample dim of 3 over the unbatched d
    torch.testing.assert_close(lp[:2], torch.tensor([math.log(0.25), math.log(0.75)]))
    assert lp[2].item() == float("-inf")
    # H = -(1/4 log 1/4 + 3/4 log 3/4) = 0.34657 + 0.21576 = 0.56233
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert d.entropy().item() == pytest.approx(expected, abs=1e-6)
    # the unmasked distribution differs: its entropy also counts the third action
    assert Categorical(logits=LOGITS).entropy().item() > expected + 0.3
    assert d.deterministic_sample.item() == 1 and d.mode.item() == 1


def test_invalid_actions_are_never_sampled():
    logits = torch.zeros(4, 5)  # uniform, so an unmasked draw would hit every action
    mask = torch.tensor(
        [[True, False, True, False, False]] * 2 + [[False, False, False, False, True]] * 2
    )
    torch.manual_seed(0)
    draws = MaskedCategorical(logits=logits, mask=mask).sample((2000,))
    assert draws.shape == (2000, 4)
    assert mask.gather(-1, draws.T).all()  # every draw is a valid action of its row
    assert set(draws[:, 0].tolist()) == {0, 2}  # both valid actions of row 0 do occur
    assert (draws[:, 2:] == 4).all()


def test_probs_are_renormalised_over_the_valid_actions():
    d = MaskedCategorical(probs=torch.tensor([0.2, 0.2, 0.6]), mask=MASK)
    torch.testing.assert_close(d.probs, torch.tensor([0.5, 0.5, 0.0]))
    assert d.log_prob(torch.tensor(2)).item() == float("-inf")


def test_a_mask_broadcasts_over_the_batch_and_gradients_flow_to_the_valid_logits():
    logits = torch.randn(3, 3, requires_grad=True)
    d = MaskedCategorical(logits=logits, mask=MASK)  # one mask for every row
    d.log_prob(torch.tensor([0, 1, 0])).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 2] == 0).all()  # the invalid action's logit gets no gradient


@pytest.mark.parametrize("batch", [(), (6,), (2, 5)])
def test_matches_torchrl_masked_categorical(batch):
    torch.manual_seed(1)
    logits = torch.randn(*batch, 7) * 2
    mask = torch.rand(*batch, 7) > 0.4
    mask[..., 3] = True  # at least one valid action per row
    mine = MaskedCategorical(logits=logits, mask=mask)
    ref = _torchrl_masked_categorical()(logits=logits, mask=mask)
    torch.testing.assert_close(mine.probs, ref.probs)
    torch.testing.assert_close(mine.entropy(), ref.entropy())
    for action in range(7):  # TorchRL's log_prob takes no sample dims on a batch: one by one
        value = torch.full(batch, action)
        torch.testing.assert_close(mine.log_prob(value), ref.log_prob(value))
    torch.manual_seed(2)
    mine_draw = mine.sample((5,))
    torch.manual_seed(2)
    assert torch.equal(mine_draw, ref.sample((5,)))  # same random stream


def test_a_row_without_valid_action_is_named():
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False
    with pytest.raises(ValueError, match=r"row \(1, 2\) of the batch \[2, 3\] has no valid action"):
        MaskedCategorical(logits=torch.zeros(2, 3, 4), mask=mask)
    # every allowed action has a -inf logit: the same, as no action could be drawn
    with pytest.raises(ValueError, match=r"row \(0,\) .* no valid action"):
        MaskedCategorical(
            logits=torch.tensor([[float("-inf"), 0.0]]), mask=torch.tensor([[True, False]])
        )
    # deferred checks (the loss's fast path) skip it; the probe on its outputs catches NaNs
    with deferred_param_checks():
        d = MaskedCategorical(logits=torch.zeros(1, 2), mask=torch.zeros(1, 2, dtype=torch.bool))
    assert torch.isnan(d.logits).all()


def test_bad_masks_say_what_was_expected():
    with pytest.raises(ValueError, match=r"mask must be a bool tensor .* got torch.int64"):
        MaskedCategorical(logits=LOGITS, mask=torch.tensor([1, 1, 0]))
    with pytest.raises(ValueError, match=r"mask of shape \[2\] does not broadcast .* \[3\]"):
        MaskedCategorical(logits=LOGITS, mask=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="pass exactly one of logits or probs"):
        MaskedCategorical(mask=MASK)
    with pytest.raises(ValueError, match="probs must be finite, >= 0"):
        MaskedCategorical(probs=torch.tensor([0.5, -0.5, 1.0]), mask=MASK)
    with pytest.raises(ValueError, match="logits contain NaN"):
        MaskedCategorical(logits=torch.tensor([0.0, float("nan"), 0.0]), mask=MASK)


def test_a_tensordict_actor_reads_the_mask_from_the_data():
    from tensordict import TensorDict
    from tensordict.nn import (
        InteractionType,
        ProbabilisticTensorDictModule,
        ProbabilisticTensorDictSequential,
        TensorDictModule,
        set_interaction_type,
    )

    net = TensorDictModule(torch.nn.Linear(2, 3), ["observation"], ["logits"])
    sampler = ProbabilisticTensorDictModule(
        in_keys={"logits": "logits", "mask": "action_mask"},
        out_keys=["action"],
        distribution_class=MaskedCategorical,
        return_log_prob=True,
    )
    actor = ProbabilisticTensorDictSequential(net, sampler)
    mask = torch.tensor([[True, False, False], [False, True, True]]).repeat(50, 1)
    td = TensorDict(observation=torch.randn(100, 2), action_mask=mask, batch_size=[100])
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        actor(td)
    assert mask.gather(-1, td["action"].unsqueeze(-1)).all()
    assert (td["action"][::2] == 0).all() and (td["action_log_prob"][::2] == 0).all()  # p = 1
    assert torch.isfinite(td["action_log_prob"]).all()
    assert MaskedCategorical.param_keys == ("logits",)  # the network writes logits only
