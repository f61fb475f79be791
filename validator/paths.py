"""Where the shipped data lives: the rule catalogue, schema, reference data and templates.

The project is installed editable (`make setup`), so the data stays in the checkout beside the
package and is read from there.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = PROJECT_ROOT / "rules"
SCHEMA_FILE = PROJECT_ROOT / "schemas" / "claims.toml"
REFERENCE_DIR = PROJECT_ROOT / "reference"
TEMPLATES_DIR = PROJECT_ROOT / "reports" / "templates"
