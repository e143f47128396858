"""The ``ppokit`` command line: ``train | eval | plot | export | tune | sweep`` and their arguments.

:mod:`~ppokit.train.cli.main` dispatches the subcommands (the ``ppokit`` entry point);
:mod:`~ppokit.train.cli.arguments` parses and checks ``ppokit train``'s arguments before torch
loads; :mod:`~ppokit.train.cli.export`, :mod:`~ppokit.train.cli.tune` and
:mod:`~ppokit.train.cli.sweep` are the other subcommands. Each is a thin layer over the library.
"""
