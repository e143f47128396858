"""Reading a ``--config`` file (JSON or TOML) into field values, with errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_config_file"]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` config file into a dict of field values.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another extension or a syntax error (with the file named).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Config file {str(path)!r} is a directory; pass a .json or .toml file.")
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"Config file {str(path)!r} is not UTF-8 text (byte {err.start}: "
            f"{err.reason}); pass a .json or .toml file of field values."
        ) from None
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10: no TOML reader in the standard library
                raise ValueError(
                    f"Config file {str(path)!r}: TOML needs Python >= 3.11; use a .json file."
                ) from None
            data = tomllib.loads(text)
        else:
            raise ValueError(
                f"Config file {str(path)!r} has extension {suffix!r}; expected .json or .toml."
            )
    except (json.JSONDecodeError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith("Config file"):
            raise
        raise ValueError(f"Could not parse config file {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"Config file {str(path)!r} must hold a table/object of fields.")
    return data
