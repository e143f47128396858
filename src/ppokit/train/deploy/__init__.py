"""A trained policy outside training: loaded back from a run directory, or exported.

:mod:`~ppokit.train.deploy.policy` the actor with its frozen observation normaliser;
:mod:`~ppokit.train.deploy.export` one graph, raw observation in, action out (ONNX,
TorchScript, ExportedProgram).
"""
