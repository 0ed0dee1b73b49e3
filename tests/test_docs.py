"""The API reference covers every module: each one has an ``automodule`` in docs/modules/*.rst.

``make docs`` (Sphinx, warnings as errors) checks that what the pages name exists; this checks
the other direction, that a new module is not left out of the reference. Nothing is imported.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["se_detectron", "benchmarks"]


def _modules():
    out = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "configs" in parts:  # LazyConfig files, read by LazyConfig.load, not modules
                continue
            out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _documented():
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "modules").glob("*.rst"))
    return set(re.findall(r"^\.\. automodule:: (\S+)$", text, flags=re.M))


def test_every_module_is_in_the_api_reference():
    missing = sorted(_modules() - _documented())
    assert not missing, f"add to docs/modules/*.rst: {missing}"


def test_the_api_reference_names_only_existing_modules():
    unknown = sorted(_documented() - _modules())
    assert not unknown, f"docs/modules/*.rst names modules that do not exist: {unknown}"
