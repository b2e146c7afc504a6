"""The equivalence checks a gate run executes: one test per (characteristic, model pair).

They ship inside the package: ``pytest --reference=MODEL --candidate=MODEL`` runs them in
any folder. There is one test function per registered characteristic (the built-ins and
any a project adds with the ``pytest_miniature_characteristics`` hook), generated from the
registry: ``test_prediction_errors``, ``test_data_representation``, ... To customise them,
copy this file to ``checks/test_equivalence.py`` in your project, or write tests that use a
characteristic's fixture, e.g.::

    def test_prediction_errors(prediction_errors, model_pair):
        prediction_errors.check(model_pair)

Reference-vs-candidate pairs gate the run; candidate-vs-candidate pairs are reported
(``--gate-all-pairs`` to gate them).
"""

from miniature.plugin.runtime import define_checks

define_checks(globals())
