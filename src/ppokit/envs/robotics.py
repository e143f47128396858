"""Gymnasium-Robotics tasks (``FetchReachDense-v4``, ...): registered on first use.

Gymnasium-Robotics registers its ids with Gymnasium only when ``gymnasium_robotics`` is
imported. ppokit imports it for an id of one of its families (told from the name alone, so
nothing is imported for other ids), and where the package is missing says how to install
it: ``pip install "ppokit[robotics]"``. The extra pins ``mujoco<3.12``: Gymnasium-Robotics
1.4.2 cannot build the Fetch models on MuJoCo 3.12 and later (its ``mujoco_utils`` tests a
joint type with ``in (mjtJoint..., ...)``, and those MuJoCo enums no longer compare equal to
the model's numpy integers: an ``AssertionError``); see ``docs/guide/spaces.md``.

Their goal-conditioned tasks give a ``Dict`` observation (``"observation"``,
``"achieved_goal"``, ``"desired_goal"``), served by the structured path, and report
``info["is_success"]``, which evaluation counts (``EvalResult.success_rate``).
"""

from __future__ import annotations

import re

__all__ = ["ROBOTICS_INSTALL_HINT", "check_mujoco_enums", "import_robotics", "is_robotics_id"]

ROBOTICS_INSTALL_HINT = 'pip install "ppokit[robotics]"'
#: the id families Gymnasium-Robotics 1.4 registers (Fetch, Shadow hand, Adroit, mazes, kitchen)
_ROBOTICS_PATTERN = re.compile(
    r"^(Fetch[A-Z]|HandReach|HandManipulate|AdroitHand|PointMaze_|AntMaze_|FrankaKitchen)"
)


def is_robotics_id(env_id: object) -> bool:
    """Whether ``env_id`` names a Gymnasium-Robotics task (from the name; imports nothing).

    Example:
        >>> is_robotics_id("FetchReachDense-v4"), is_robotics_id("PointMaze_UMaze-v3")
        (True, True)
        >>> is_robotics_id("Hopper-v5")
        False
    """
    return isinstance(env_id, str) and bool(_ROBOTICS_PATTERN.match(env_id))


def import_robotics(env_id: str) -> None:
    """Import ``gymnasium_robotics`` (which registers its ids) for a robotics ``env_id``.

    Raises:
        ImportError: the package is missing; the message names the extra to install.

    Example:
        >>> import_robotics("CartPole-v1")  # not a robotics id: nothing to do
    """
    if not is_robotics_id(env_id):
        return
    try:
        import gymnasium_robotics
    except ImportError as err:
        raise ImportError(
            f"{env_id} is a Gymnasium-Robotics task, and gymnasium-robotics is not installed: "
            f"{ROBOTICS_INSTALL_HINT} (it also pins a MuJoCo that builds its models)."
        ) from err
    import gymnasium as gym

    gym.register_envs(gymnasium_robotics)
    if env_id.startswith(("Fetch", "Hand")):  # the models that set joints through mujoco_utils
        check_mujoco_enums(env_id)


#: the last Gymnasium-Robotics release known to compare joint types as MuJoCo < 3.12 allows
_LAST_CHECKED_ROBOTICS = (1, 4, 2)


def check_mujoco_enums(env_id: str) -> None:
    """Refuse, naming the fix, a MuJoCo on which Gymnasium-Robotics cannot build ``env_id``.

    Gymnasium-Robotics (up to 1.4.2) sets a Fetch or hand model's joints after testing
    ``model.jnt_type[j] in (mjtJoint.mjJNT_HINGE, mjtJoint.mjJNT_SLIDE)``; from MuJoCo 3.12
    on, those enums no longer compare equal to numpy integers and the test fails with a bare
    ``AssertionError``. The same comparison is tried here first.

    Raises:
        ImportError: that comparison fails with a Gymnasium-Robotics release that makes it.
    """
    from importlib.metadata import version

    import mujoco
    import numpy as np

    joints = mujoco.mjtJoint
    if np.int32(joints.mjJNT_SLIDE.value) in (joints.mjJNT_HINGE, joints.mjJNT_SLIDE):
        return
    robotics = version("gymnasium-robotics")
    release = tuple(int(p) for p in robotics.split(".")[:3] if p.isdigit())
    if release > _LAST_CHECKED_ROBOTICS:
        return  # a newer release may have fixed it: let it try
    raise ImportError(
        f"{env_id}: gymnasium-robotics {robotics} cannot build its models on MuJoCo "
        f"{mujoco.__version__} (its joint-type check compares MuJoCo enums with numpy "
        f"integers, which MuJoCo 3.12+ no longer equates). {ROBOTICS_INSTALL_HINT} installs a "
        'MuJoCo that works, or: pip install "mujoco>=3.1,<3.12".'
    )
