"""The README documents what the code offers."""

from pathlib import Path

from miniature.core.models import PAPER_ALIASES
from miniature.core.settings import OPTIONS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_option_is_in_the_readme_table() -> None:
    missing = [o.flag for o in OPTIONS if f"| `{o.flag}` | `{o.ini}` |" not in README]
    assert not missing, f"add these options to the README's table: {missing}"


def test_every_paper_alias_is_listed_with_its_hub_id() -> None:
    for alias, hub_id in PAPER_ALIASES.items():
        assert f"| `{alias}` | `{hub_id}` |" in README
