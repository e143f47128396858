"""The package surface: lazy exports, what type checkers see, the version, py.typed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import ppokit

ROOT = Path(__file__).resolve().parents[1]
INIT = Path(ppokit.__file__)
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` in ppokit/__init__.py."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1, "expected one `if TYPE_CHECKING:` block in ppokit/__init__.py"
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            assert alias.asname in (None, alias.name), f"{alias.name} renamed to {alias.asname}"
            found[alias.name] = node.module
    return found


def test_type_checking_imports_and_all_list_the_lazy_map() -> None:
    lazy = ppokit._EXPORTS
    assert _type_checking_imports() == lazy  # same names, from the same modules
    assert sorted(ppokit.__all__) == sorted(lazy)
    assert len(set(ppokit.__all__)) == len(ppokit.__all__)


@pytest.mark.parametrize("name", ppokit.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(ppokit, name)
    assert getattr(value, "__name__", name) == name  # the object, not a module of that name
    assert name in dir(ppokit)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'ClipPPOLos'"):
        ppokit.ClipPPOLos  # noqa: B018


def test_import_stays_cheap() -> None:
    # the loss must be usable without the training extras: importing the package alone
    # loads none of them (nor torch.distributed)
    code = (
        "import sys, ppokit; heavy = ('gymnasium', 'tensorboard', 'torch.distributed', "
        "'matplotlib', 'tyro'); print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_comes_from_pyproject() -> None:
    # the [project] table's version line (tomllib is 3.11+, ppokit supports 3.10)
    declared = re.search(r'^version = "([^"]+)"$', PYPROJECT, re.M)
    assert declared is not None
    assert ppokit.__version__ == declared.group(1)
    assert f'"{declared.group(1)}"' not in INIT.read_text()  # not written a second time


def test_package_is_marked_typed() -> None:
    assert resources.files("ppokit").joinpath("py.typed").is_file()
    table = PYPROJECT.split("[tool.setuptools.package-data]", 1)[1]
    assert re.search(r'^ppokit = \[.*"py\.typed".*\]$', table, re.M)
