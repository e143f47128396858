"""ppokit.value: advantage and return estimators.

Layout (pure math first, TensorDict modules on top):

- :mod:`~ppokit.value.checks`, :mod:`~ppokit.value.scan`: input checks and the backward
  linear recursion every estimator reduces to.
- :mod:`~ppokit.value.functional`: GAE, TD(lambda), TD(1), TD(0) on tensors.
- :mod:`~ppokit.value.functional_vtrace`: V-trace on tensors.
- :mod:`~ppokit.value.functional_multiagent`: multi-agent GAE on tensors.
- :mod:`~ppokit.value.inputs`: keys and the helpers that read a rollout.
- :mod:`~ppokit.value.base`: the modules' shared checks, value-network calls and output.
- :mod:`~ppokit.value.gae`, :mod:`~ppokit.value.td`, :mod:`~ppokit.value.vtrace`: modules.
- :mod:`~ppokit.value.estimators`: the names (``ValueEstimators``) and the one factory,
  ``make_value_estimator``, with the default hyperparameters.
"""
