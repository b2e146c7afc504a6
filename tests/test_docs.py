"""The README is a front page and the documentation site documents what the code offers:
the options page is generated from the option table, the site builds with --strict."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miniature.core.models import PAPER_ALIASES
from miniature.core.settings import OPTIONS

REPOSITORY = Path(__file__).resolve().parent.parent
README = (REPOSITORY / "README.md").read_text()
DOCS = REPOSITORY / "docs"


def generator():
    spec = importlib.util.spec_from_file_location("gen_options", REPOSITORY / "scripts" / "gen_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_options_page_is_the_generated_one() -> None:
    committed = (DOCS / "options.md").read_text()
    assert committed == generator().render(), "run `python scripts/gen_options.py` and commit docs/options.md"


def test_every_option_is_on_the_options_page() -> None:
    page = (DOCS / "options.md").read_text()
    missing = [o.flag for o in OPTIONS if f"| `{o.flag}` | `{o.ini}` |" not in page]
    assert not missing, f"missing from docs/options.md: {missing}"
    assert "| `--seed` | `miniature_seed` | 0 |" in page  # a default of 0 is shown


def test_every_paper_alias_is_listed_with_its_hub_id() -> None:
    models = (DOCS / "models.md").read_text()
    for alias, hub_id in PAPER_ALIASES.items():
        assert f"| `{alias}` | `{hub_id}` |" in models


def test_readme_is_a_front_page_opening_with_the_fresh_machine_commands() -> None:
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to docs/"
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert README.index("```bash") < README.index("\n## ")  # the commands come first
    assert (
        first_block[0].startswith("python3 -m venv .venv")
        and 'pip install -e ".[dev,onnx,quantize,ray]"' in first_block[0]
    )
    assert first_block[0].endswith("miniature demo") and first_block[1] == "python -m pytest tests"
    assert "pip install pytest-miniature" in README and "pip install miniature" not in README


def test_readme_links_point_at_files_that_exist() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)[^)]*\)", README)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local and all((REPOSITORY / t).exists() for t in local), [t for t in local if not (REPOSITORY / t).exists()]
    assert (DOCS / "img" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_facing_text_has_no_issue_numbers_or_history() -> None:
    for page in [REPOSITORY / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text()
        assert not re.search(r"(issue |since |\()#\d+", text), page.name
        assert "load average" not in text and "used to" not in text, page.name


def test_the_bad_input_table_keeps_its_row_format() -> None:
    rows = [line for line in (DOCS / "bad-input.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0] == "| input | what happens |" and len(rows) > 40
    assert all(line.count(" | ") >= 1 and line.endswith(" |") for line in rows)


@pytest.mark.slow
def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]'; CI installs them)")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": shutil.os.environ["PATH"], "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "options" / "index.html").is_file()
