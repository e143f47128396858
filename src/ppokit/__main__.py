"""``python -m ppokit`` runs the ``ppokit`` command line."""

from ppokit.train.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
