"""docs/api.md documents every public name, and every name it documents exists."""

import re
from pathlib import Path

import prunekit as pk

DOC = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()


def test_every_export_is_documented():
    missing = [n for n in pk.__all__ if f"pk.{n}" not in DOC]
    assert not missing, f"docs/api.md does not document {missing}"


def test_documented_names_exist():
    for name in set(re.findall(r"`pk\.(\w+)", DOC)):
        assert hasattr(pk, name), f"docs/api.md documents pk.{name}, which does not exist"
