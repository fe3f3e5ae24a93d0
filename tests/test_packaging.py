"""pyproject.toml as setuptools reads it: no deprecated forms that print warning boxes on install."""
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_license_is_an_spdx_expression():
    """The TOML-table form (`{text = "MIT"}`) makes setuptools ≥ 77 print a deprecation box twice."""
    config = tomllib.loads(PYPROJECT.read_text())
    assert config["project"]["license"] == "MIT"
    # The string form needs setuptools 77 (PEP 639); an older one would reject it.
    requires = " ".join(config["build-system"]["requires"])
    match = re.search(r"setuptools>=(\d+)", requires)
    assert match and int(match.group(1)) >= 77, requires
