"""A run's settings: the configuration dataclass, its checks, presets and config files.

:mod:`~ppokit.train.settings.config` ``TrainConfig`` and the iteration plan;
:mod:`~ppokit.train.settings.validation` every field's type and range;
:mod:`~ppokit.train.settings.presets` the published settings per task;
:mod:`~ppokit.train.settings.files` reading ``--config`` files (JSON or TOML).
"""
