"""Structured observation and action spaces in training (``Dict``, ``Tuple``, masks).

:mod:`~ppokit.train.structured.training` builds the networks, collects and evaluates;
:mod:`~ppokit.train.structured.acting` acts with a composite-distribution actor on plain tensors.
"""
