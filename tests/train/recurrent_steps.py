"""The step-by-step reference for a recurrent actor and critic over ``[B, T]`` sequences (used
by the shared-core and the pixels tests)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from ppokit.modules.recurrent import set_recurrent_mode
from ppokit.train.recurrent.state import PolicyState


def step_loop_against_sequence(
    actor, critic, obs: torch.Tensor, is_init: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``actor`` and ``critic`` one step at a time from a random start state, the state
    zeroed where ``is_init [B, T, 1]`` (PolicyState.advance with done = the next step's
    is_init), then re-run the stored sequences in sequence mode: the logits (log-softmaxed, as
    Categorical keeps them) and the values must agree. Returns the sequence run's
    ``(logits [B, T, A], values [B, T, 1])``, with gradients."""
    b, t = is_init.shape[:2]
    state = PolicyState(actor, critic, batch=b)
    state.states = {k: torch.randn_like(v) for k, v in state.states.items()}
    state.is_init = is_init[:, 0].clone()
    logits, values, stored = [], [], {k: [] for k in state.keys}
    with torch.no_grad():
        for step in range(t):
            td = state.fill(TensorDict({"observation": obs[:, step]}, [b]))
            for k in state.keys:
                stored[k].append(td[k])
            logits.append(actor(td)["logits"])
            values.append(critic(td)["state_value"])
            done = is_init[:, step + 1, 0] if step + 1 < t else torch.zeros(b, dtype=torch.bool)
            state.advance(td, done)
    seq = TensorDict({"observation": obs, "is_init": is_init}, [b, t])
    seq.update({k: torch.stack(v, 1) for k, v in stored.items()})
    with set_recurrent_mode(True):
        dist = actor.get_dist(seq.clone())
        value = critic(seq.clone())["state_value"]
    ref = torch.log_softmax(torch.stack(logits, 1), -1)
    torch.testing.assert_close(dist.logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value, torch.stack(values, 1), rtol=1e-5, atol=1e-5)
    return dist.logits, value
