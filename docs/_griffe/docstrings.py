"""Griffe extension for the API pages: read ppokit's docstrings as mkdocstrings expects.

ppokit's docstrings are Google style with two habits from Sphinx that mkdocstrings does not
understand; this extension rewrites them before the docstrings are parsed:

- a singular ``Example:`` heading. Griffe only treats ``Examples:`` as a section of code
  examples and renders ``Example:`` as an admonition, where the ``>>>`` lines would read as
  nested block quotes. The heading is renamed, so the doctests render as Python code.
- Sphinx roles such as ``:class:`World``` or ``:func:`~torch.compile```, which would show up
  literally. They become inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")


class PpokitDocstrings(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` and turn Sphinx roles into inline code."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
