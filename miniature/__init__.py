"""miniature: does a compressed model still behave like the large model it replaces?

The package is a pytest plugin (``miniature.plugin``) on a gate core (``miniature.core``:
characteristics, statistics, per-item outputs, models, data), with reports
(``miniature.reports``) and tools (``miniature.tools``: command line, demo, compression).
Importing it is cheap: torch and transformers are only imported by the modules that need
them. A project adds a characteristic by returning a :class:`Characteristic` from the
``pytest_miniature_characteristics`` hook in its ``conftest.py``. From Python (a
notebook, a script), :func:`compare` runs the same gate and returns a :class:`Report`.
"""

from miniature.api import OptionError, Report, compare
from miniature.core.registry import Characteristic
from miniature.errors import MiniatureError

__all__ = ["Characteristic", "MiniatureError", "OptionError", "Report", "__version__", "compare"]
#: the one version source (pyproject.toml reads it)
__version__ = "0.1.0"
