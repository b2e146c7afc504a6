"""Make docs/img/summary.png: the summary page of the offline demo's gate (the real
all-MiniLM-L6-v2 against its compressed versions; ``miniature demo --quick``, cached),
photographed by headless Chromium.

Usage: python scripts/screenshot.py [--page reports/demo/summary.html] [--chromium PATH]
(needs `apt-get install chromium`; without --page it runs the quick demo first)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "summary.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--page", type=Path, help="an existing summary page (default: run the quick demo)")
    args = parser.parse_args()
    if not args.chromium:
        print("screenshot: chromium not found; fix: apt-get install chromium, or pass --chromium PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        page = args.page
        if page is None:
            reports = Path(folder) / "reports"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "miniature.tools.cli",
                    "demo",
                    "--quick",
                    "--no-progress",
                    f"--report-dir={reports}",
                ],
                check=True,
            )
            page = reports / "summary.html"
        args.output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                args.chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--window-size=1280,900",
                f"--screenshot={args.output.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
