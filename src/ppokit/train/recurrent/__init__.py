"""Recurrent (LSTM/GRU) policies in training: building, acting, sequences and export.

:mod:`~ppokit.train.recurrent.build` the actor and critic; :mod:`~ppokit.train.recurrent.state`
the hidden state carried between steps; :mod:`~ppokit.train.recurrent.acting` the collector's
step on plain tensors; :mod:`~ppokit.train.recurrent.sequences` the rollout and minibatches of
env sequences; :mod:`~ppokit.train.recurrent.export` the deployable graph with explicit state.
"""
