"""Action distributions for PPO actors, built on ``torch.distributions``.

Each class is constructed from keyword parameters (``loc``/``scale`` or ``logits``/``probs``), so
it can be given as ``distribution_class`` to tensordict's ``ProbabilisticTensorDictModule`` (and to
ppokit's or TorchRL's ``ProbabilisticActor``). Each has a ``deterministic_sample``, which is what
``set_interaction_type(InteractionType.DETERMINISTIC)`` acts with.

Numbers and shapes follow TorchRL 0.14.1 (``torchrl.modules.TanhNormal``, ``OneHotCategorical``,
``tensordict.nn.NormalParamExtractor``), so actions sampled by one library are scored identically by
the other. Parameters are checked on construction and actions on ``log_prob``; a bad value raises
``ValueError`` naming the parameter instead of producing NaNs downstream. The value checks are
skipped under ``torch.compile`` and inside :func:`deferred_param_checks` (whose caller checks the
results instead).

The draws and log-probs are pure functions on tensors (:func:`normal_rsample`,
:func:`normal_log_prob`, :func:`categorical_sample`, :func:`categorical_log_prob`, and the
``*_sample_and_log_prob`` acting steps built from them): the classes' methods call them, and so
does the collector's tensor policy, eager or compiled.

Layout: ``checks`` (parameter checks), ``normal`` (Gaussian and its param extractor),
``tanh_normal`` (bounded Gaussian), ``categorical`` (index and one-hot categoricals), ``masked``
(categorical restricted to the valid actions).
"""

from ppokit.modules.distributions.categorical import (
    Categorical,
    OneHotCategorical,
    categorical_log_prob,
    categorical_sample,
    categorical_sample_and_log_prob,
)
from ppokit.modules.distributions.checks import deferred_param_checks
from ppokit.modules.distributions.masked import MaskedCategorical
from ppokit.modules.distributions.normal import (
    IndependentNormal,
    NormalParamExtractor,
    biased_softplus,
    normal_log_prob,
    normal_rsample,
    normal_sample_and_log_prob,
)
from ppokit.modules.distributions.tanh_normal import TanhNormal, tanh_normal_log_prob

__all__ = [
    "Categorical",
    "IndependentNormal",
    "MaskedCategorical",
    "NormalParamExtractor",
    "OneHotCategorical",
    "TanhNormal",
    "biased_softplus",
    "categorical_log_prob",
    "categorical_sample",
    "categorical_sample_and_log_prob",
    "deferred_param_checks",
    "normal_log_prob",
    "normal_rsample",
    "normal_sample_and_log_prob",
    "tanh_normal_log_prob",
]
