"""The floor of a PPO Atari iteration on this CPU: the Nature CNN's own arithmetic, nothing else.

Run: ``python benchmarks/bench_cnn_floor.py``

Times, in CPU seconds on one torch thread, what any PPO implementation with the PPO paper's
Atari settings must compute per 1,024-step iteration (8 envs x 128 steps, 4 epochs x 4
minibatches of 256): the shared trunk and both heads forward and backward on 16 minibatches
of 256 frames, and the acting forward on 128 batches of 8 frames. No environment, no loss
bookkeeping, no optimizer: a trainer's rate cannot exceed 1,024 steps over their sum.

Both precisions, interleaved: float32 (what SB3 computes) and bfloat16 (ppokit's
``--precision bfloat16``: the CNN's layers under autocast; on a CPU without native bfloat16
this part measures emulated arithmetic).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from ppokit.train.build_cnn import build_cnn_actor_critic


def floor(precision: str) -> float:
    """CPU seconds of the CNN arithmetic of one 1,024-step iteration at ``precision``."""
    torch.manual_seed(0)
    env = SimpleNamespace(obs_shape=(4, 84, 84), discrete=True, num_actions=4)
    actor, critic = build_cnn_actor_critic(env, precision=precision)
    trunk = actor.module[0].module[0].trunk  # the NatureCNN (no memo: called once here)
    policy_head, value_head = actor.module[0].module[1], critic.module.net[1]
    frames = torch.randint(0, 256, (256, 4, 84, 84), dtype=torch.uint8)

    def forward_backward() -> None:
        features = trunk(frames)
        loss = policy_head(features).logsumexp(-1).mean() + value_head(features).mean()
        loss.backward()

    def acting() -> None:
        with torch.no_grad():
            for _ in range(128):
                trunk(frames[:8])

    forward_backward()
    acting()  # warm-up (first-use costs)
    total = 0.0
    for name, fn, reps in (
        ("update: fwd+bwd, 16 minibatches of 256", forward_backward, 16),
        ("acting: fwd, 128 batches of 8", acting, 1),
    ):
        c0 = time.process_time()
        for _ in range(reps):
            fn()
        seconds = time.process_time() - c0
        total += seconds
        print(f"{precision} {name}: {seconds:.2f} CPU s")
    print(f"{precision} floor: {total:.2f} CPU s per 1,024 steps = {1024 / total:.0f} steps/CPU s")
    return total


def main() -> None:
    torch.set_num_threads(1)
    totals: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(2):  # interleaved, so a burst of load hits both
        for precision, seconds in totals.items():
            seconds.append(floor(precision))
    f32, bf16 = min(totals["float32"]), min(totals["bfloat16"])
    print(f"best of 2: float32 {f32:.2f} CPU s, bfloat16 {bf16:.2f} CPU s: x{f32 / bf16:.2f}")


if __name__ == "__main__":
    main()
