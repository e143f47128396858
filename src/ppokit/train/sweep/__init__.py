"""Multi-seed sweeps: one training per seed, their aggregate, and comparisons between sweeps.

:mod:`~ppokit.train.sweep.plan` decides what each seed needs (skip, start, resume);
:mod:`~ppokit.train.sweep.runner` runs the seeds as subprocesses;
:mod:`~ppokit.train.sweep.stats` holds the statistics over seeds (IQM, bootstrap intervals);
:mod:`~ppokit.train.sweep.aggregate` writes a sweep's figures;
:mod:`~ppokit.train.sweep.compare` sets sweeps of one task side by side;
:mod:`~ppokit.train.sweep.settings` reads back and compares the settings the seeds trained with.
"""
