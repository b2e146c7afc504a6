"""The equivalence checks of this project's gate: one test per characteristic and model pair,
generated from the registry (the built-ins and ``norm_agreement`` from ``conftest.py``).

A team copies this folder (``checks/``: this file, ``conftest.py``, ``pytest.ini``) into its
repository and runs ``pytest checks --reference=MODEL --candidate=MODEL``. To keep only some
checks, or add assertions of your own, write tests that use a characteristic's fixture
instead of the generated ones, e.g.::

    def test_prediction_errors(prediction_errors, model_pair):
        prediction_errors.check(model_pair)
"""

from miniature.plugin.runtime import define_checks

define_checks(globals())
