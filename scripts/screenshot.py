"""Make docs/img/summary.png: a real gate run on the tiny test models (built here, offline),
its summary page photographed by headless Chromium.

Usage: python scripts/screenshot.py [--chromium PATH]   (needs `apt-get install chromium`)
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
    args = parser.parse_args()
    if not args.chromium:
        print("screenshot: chromium not found; fix: apt-get install chromium, or pass --chromium PATH",
              file=sys.stderr)
        return 2
    import miniature
    from miniature.testing import make_tiny_models

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models = make_tiny_models(root / "models")
        report = miniature.compare(models["reference"], [models["small"], models["distil"]],
                                   attack_model=str(models["attacker"]), cache_dir=str(root / "cache"),
                                   data_limit=120, attack_size=40, bootstrap=200)
        page = report.save_html(root / "summary.html")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--window-size=1280,900",
                        f"--screenshot={args.output.resolve()}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
