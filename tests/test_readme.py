"""Every ```python block of the README and of the documentation pages runs as written.

A page's blocks run in order in one namespace (a later block may use an earlier one's names),
so a page reads as one script. Pages owned elsewhere join by being listed in DOC_PAGES
(docs/guide/library.md runs in tests/train/test_library.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = [
    "README.md",
    "docs/getting-started.md",
    "docs/guide/loss.md",
    "docs/guide/value.md",
    "docs/guide/modules.md",
    "docs/guide/training.md",
    "docs/guide/distributed.md",
    "docs/guide/speed.md",
]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


def test_readme_and_guide_have_examples() -> None:
    assert len(_blocks("README.md")) >= 1  # the loss quickstart
    assert sum(len(_blocks(page)) for page in DOC_PAGES) >= 10


@pytest.mark.parametrize("page", [p for p in DOC_PAGES if _blocks(p)])
def test_page_examples_run(page: str) -> None:
    namespace = {"__name__": "docs_example"}
    for index, block in enumerate(_blocks(page)):
        exec(compile(block, f"{page} block {index}", "exec"), namespace)
