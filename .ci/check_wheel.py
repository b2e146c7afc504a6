"""Check a built wheel's contents: what the installed plugin reads at run time is in it, the
project's own tests and benchmarks are not. Usage: python .ci/check_wheel.py dist/*.whl"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

#: files the installed package reads at run time (templates, lexicon, stopwords, shipped checks)
REQUIRED = (
    "miniature/plugin/checks/test_equivalence.py",
    "miniature/resources/templates/summary.html.j2",
    "miniature/resources/templates/matrix.html.j2",
    "miniature/resources/templates/summary.css",
    "miniature/resources/sentiment/vader_lexicon.tsv",
    "miniature/resources/sentiment/LICENSE.vader",
    "miniature/resources/nltk_data/corpora/stopwords/english",
)
#: top-level folders of the repository that must not be installed
FORBIDDEN_TOP = ("tests/", "benchmarks/", "checks/", "docs/", "examples/")


def problems(wheel: Path) -> list[str]:
    """One line per missing or unwanted file of ``wheel``; empty when it is as it should be."""
    names = set(zipfile.ZipFile(wheel).namelist())
    found = [f"missing: {name}" for name in REQUIRED if name not in names]
    found += [f"should not ship: {name}" for name in sorted(names) if name.startswith(FORBIDDEN_TOP)]
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
        found.append("missing: the licence file in .dist-info/licenses/")
    return found


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python .ci/check_wheel.py WHEEL...", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        lines = problems(Path(path))
        for line in lines:
            print(f"{path}: {line}", file=sys.stderr)
        failed |= bool(lines)
        if not lines:
            print(f"{path}: contents OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
