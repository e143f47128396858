"""ppokit's LSTM/GRU TensorDict modules: the sequence mode against a step-by-step loop, the
errors for a missing state, and interop with TorchRL 0.14.1's LSTMModule and PPO loss."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from ppokit.modules.actors import ProbabilisticActor
from ppokit.modules.distributions import Categorical
from ppokit.modules.recurrent import (
    GRUModule,
    LSTMModule,
    RecurrentModuleBase,
    set_recurrent_mode,
)

B, T, F, H = 3, 9, 4, 6


def _step_loop(
    module: RecurrentModuleBase, x: torch.Tensor, is_init: torch.Tensor, start: dict
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference: one step at a time, the state carried by hand; returns the outputs and
    the state that entered each step (what a collector stores)."""
    ys, stored, state = [], {k: [] for k in start}, dict(start)
    for t in range(x.shape[1]):
        td = TensorDict({"x": x[:, t], "is_init": is_init[:, t], **state}, [x.shape[0]])
        for k in state:
            stored[k].append(state[k])
        module(td)
        ys.append(td["y"])
        state = {k: td["next", k] for k in state}
    return torch.stack(ys, 1), {k: torch.stack(v, 1) for k, v in stored.items()}


def _manual_lstm(lstm: nn.LSTM, x: torch.Tensor, is_init: torch.Tensor, h, c) -> torch.Tensor:
    """An independent one-layer LSTM: the gate equations written out (torch's gate order
    i, f, g, o), the state zeroed where is_init."""
    w_ih, w_hh, b = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    out = []
    for t in range(x.shape[1]):
        keep = (~is_init[:, t]).float()
        h, c = h * keep, c * keep
        i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cls", [LSTMModule, GRUModule])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_sequence_mode_with_resets_matches_step_loop(cls: type, num_layers: int) -> None:
    torch.manual_seed(0)
    module = cls(F, H, in_key="x", out_key="y", num_layers=num_layers)
    x = torch.randn(B, T, F)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[0, 3], is_init[1, 3], is_init[1, 7], is_init[2, 0] = True, True, True, True
    start = {k: torch.randn_like(v) for k, v in module.initial_state(B).items()}
    ref, stored = _step_loop(module, x, is_init, start)
    seq = TensorDict({"x": x, "is_init": is_init, **stored}, [B, T])
    with set_recurrent_mode(True):
        out = module(seq)["y"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # gradients flow through the re-run (truncated BPTT over the sequence)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_lstm_step_loop_matches_hand_written_gates() -> None:
    torch.manual_seed(1)
    module = LSTMModule(F, H, in_key="x", out_key="y")
    x = torch.randn(B, T, F)
    is_init = torch.rand(B, T, 1) < 0.25
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    start = {"recurrent_state_h": h0[:, None], "recurrent_state_c": c0[:, None]}
    ref = _manual_lstm(module.rnn, x, is_init, h0, c0)
    out, _ = _step_loop(module, x, is_init, start)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_sequence_mode_with_extra_batch_dims() -> None:
    torch.manual_seed(2)
    module = GRUModule(F, H, in_key="x", out_key="y")
    x, is_init = torch.randn(2, 3, T, F), torch.rand(2, 3, T, 1) < 0.2
    state = {k: torch.randn(2, 3, T, 1, H) for k in module.state_keys}
    td = TensorDict({"x": x, "is_init": is_init, **state}, [2, 3, T])
    with set_recurrent_mode(True):
        out = module(td.clone())["y"]
        flat = module(td.reshape(6, T))["y"]
    torch.testing.assert_close(out.reshape(6, T, H), flat)


def test_missing_state_or_is_init_is_an_error_not_a_reset() -> None:
    module = LSTMModule(F, H, in_key="x", out_key="y")
    td = TensorDict({"x": torch.randn(B, F), "is_init": torch.ones(B, 1, dtype=torch.bool)}, [B])
    with pytest.raises(KeyError, match=r"recurrent_state_h.*never replaced by zeros"):
        module(td)
    td = TensorDict({"x": torch.randn(B, F), **module.initial_state(B)}, [B])
    with pytest.raises(KeyError, match="is_init"):
        module(td)
    bad = TensorDict(
        {
            "x": torch.randn(B, F),
            "is_init": torch.ones(B, 1, dtype=torch.bool),
            **module.initial_state(B + 1),
        },
        [],
    )
    with pytest.raises(ValueError, match=r"expected \(3, 1, 6\)"):
        module(bad)
    with set_recurrent_mode(True), pytest.raises(ValueError, match="sequence mode expects"):
        module(
            TensorDict(
                {
                    "x": torch.randn(B, F),
                    "is_init": torch.ones(B, 1, dtype=torch.bool),
                    **module.initial_state(B),
                },
                [B],
            )
        )


# --------------------------------------------------------------------------- TorchRL interop


def _torchrl_lstm_copy(module: LSTMModule):
    rnn = pytest.importorskip("torchrl.modules")
    theirs = rnn.LSTMModule(
        input_size=F,
        hidden_size=H,
        in_keys=["x", "recurrent_state_h", "recurrent_state_c"],
        out_keys=["y", ("next", "recurrent_state_h"), ("next", "recurrent_state_c")],
    )
    theirs.lstm.load_state_dict(module.rnn.state_dict())
    return theirs


def test_torchrl_lstm_module_same_keys_and_numbers() -> None:
    torchrl_modules = pytest.importorskip("torchrl.modules")
    torch.manual_seed(3)
    ours = LSTMModule(F, H, in_key="x", out_key="y")
    theirs = _torchrl_lstm_copy(ours)
    x = torch.randn(B, T, F)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[:, 0], is_init[1, 4] = True, True
    # the step-by-step rollout of each, from the same data: same outputs and next states
    ref, stored = _step_loop(ours, x, is_init, ours.initial_state(B))
    got, stored_theirs = _step_loop(theirs, x, is_init, ours.initial_state(B))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stored_theirs, stored, rtol=1e-5, atol=1e-6)
    # data collected by ours, re-run in TorchRL's recurrent mode: the same sequence outputs.
    # Stored as ppokit's collector (and TorchRL's env primer) stores it: zeros where is_init,
    # since TorchRL's recurrent mode starts a mid-sequence episode from the stored state.
    stored = {k: v * ~is_init[..., None] for k, v in stored.items()}
    seq = TensorDict({"x": x, "is_init": is_init, **stored}, [B, T])
    with torchrl_modules.set_recurrent_mode(True):
        theirs_seq = theirs(seq.clone())["y"]
    with set_recurrent_mode(True):
        ours_seq = ours(seq.clone())["y"]
    torch.testing.assert_close(theirs_seq, ours_seq, rtol=1e-5, atol=1e-6)


def _actor(core: nn.Module, head: nn.Linear) -> ProbabilisticActor:
    params = TensorDictModule(head, in_keys=["y"], out_keys=["logits"])
    return ProbabilisticActor(
        TensorDictSequential(core, params),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )


def _sequence_batch(ours: LSTMModule) -> TensorDict:
    torch.manual_seed(4)
    x = torch.randn(B, T, F)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[:, 0], is_init[2, 5] = True, True
    _, stored = _step_loop(ours, x, is_init, ours.initial_state(B))
    stored = {k: v * ~is_init[..., None] for k, v in stored.items()}  # as the collector
    return TensorDict(
        {
            "x": x,
            "is_init": is_init,
            **stored,
            "action": torch.randint(0, 2, (B, T)),
            "action_log_prob": torch.full((B, T), -0.69),
            "advantage": torch.randn(B, T, 1),
            "value_target": torch.randn(B, T, 1),
        },
        [B, T],
    )


def test_torchrl_lstm_actor_in_ppokit_loss_and_ppokit_actor_in_torchrl_loss() -> None:
    torchrl_modules = pytest.importorskip("torchrl.modules")
    torchrl_objectives = pytest.importorskip("torchrl.objectives")
    from ppokit.modules.actors import ValueOperator
    from ppokit.objectives.ppo import ClipPPOLoss

    torch.manual_seed(5)
    ours_core = LSTMModule(F, H, in_key="x", out_key="y")
    theirs_core = _torchrl_lstm_copy(ours_core)
    head = nn.Linear(H, 2)
    critic = ValueOperator(nn.Linear(F, 1), in_keys=["x"])
    ours_actor, theirs_actor = _actor(ours_core, head), _actor(theirs_core, head)
    data = _sequence_batch(ours_core)

    def run(loss_cls: type, actor: nn.Module, mode: type) -> dict[str, torch.Tensor]:
        loss = loss_cls(actor, critic, entropy_coeff=0.01)
        with mode(True):
            out = loss(data.clone())
        total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
        grads = torch.autograd.grad(total, [head.weight])
        return {"objective": out["loss_objective"].detach(), "head_grad": grads[0]}

    ref = run(ClipPPOLoss, ours_actor, set_recurrent_mode)
    # a TorchRL LSTM actor through ppokit's loss
    got = run(ClipPPOLoss, theirs_actor, torchrl_modules.set_recurrent_mode)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # a ppokit LSTM actor through TorchRL's loss
    got = run(torchrl_objectives.ClipPPOLoss, ours_actor, set_recurrent_mode)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
