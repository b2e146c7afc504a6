"""The plugin costs nothing at start-up for projects that do not use it."""

import subprocess
import sys

import pytest


def test_importing_the_plugin_imports_no_heavy_library() -> None:
    code = (
        "import sys, miniature.plugin.hooks, miniature.plugin.session, miniature.plugin.startup, "
        "miniature.core.settings; "
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'textattack', 'matplotlib', 'datasets') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_datasets_name_that_cannot_be_loaded_is_one_clear_line(monkeypatch) -> None:
    import pytest

    from miniature.core.data import load_records
    from miniature.errors import DataError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        load_records("miniature-tests/no-such-dataset:test")
    message = str(info.value)
    assert "\n" not in message and "'miniature-tests/no-such-dataset' (split 'test')" in message
    assert "fix:" in message
