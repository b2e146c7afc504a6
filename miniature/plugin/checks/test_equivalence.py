"""The equivalence checks a gate run executes: one test per (characteristic, model pair).

They ship inside the package: ``pytest --reference=MODEL --candidate=MODEL`` runs them in
any folder. To customise them, copy this file to ``checks/test_equivalence.py`` in your
project; a run that collects tests using the ``model_pair`` fixture uses those instead.
Reference-vs-candidate pairs gate the run; candidate-vs-candidate pairs are reported
(``--gate-all-pairs`` to gate them).
"""


def test_prediction_errors(prediction_errors, model_pair):
    prediction_errors.check(model_pair)


def test_data_representation(data_representation, model_pair, stage):
    data_representation.check(model_pair, stage=stage)


def test_data_distribution(data_distribution, model_pair):
    data_distribution.check(model_pair)


def test_adversarial_vulnerability(adversarial_vulnerability, model_pair):
    adversarial_vulnerability.check(model_pair)
