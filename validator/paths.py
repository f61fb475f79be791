"""Where the shipped data lives: the rule catalogue, schema, reference data and templates.

An installed package carries them under `validator/data/` (the build copies them there; see
tools/build_data.py). A checkout, or the editable install `make setup` makes, keeps them as
top-level folders beside the package and reads them from there. Both places have one layout.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED_DATA = _PACKAGE / "data"

DATA_ROOT = _INSTALLED_DATA if _INSTALLED_DATA.is_dir() else _PACKAGE.parent
RULES_DIR = DATA_ROOT / "rules"
SCHEMA_FILE = DATA_ROOT / "schemas" / "claims.toml"
REFERENCE_DIR = DATA_ROOT / "reference"
TEMPLATES_DIR = DATA_ROOT / "reports" / "templates"
