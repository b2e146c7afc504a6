"""A characteristic of this project's own, registered through ``pytest_miniature_characteristics``.

``norm_agreement``: do the two models give the long sentence vectors (longer than the
median) to the same test items? It gates the run as ``test_norm_agreement[...]``, appears
in the summary, the JSON and the page, and takes ``--threshold norm_agreement=J`` (set in
``pytest.ini`` here).
"""

import numpy as np

from miniature import Characteristic
from miniature.core.characteristics.base import ComparisonResult
from miniature.core.stats import set_agreement


def compare_norms(gate, pair, stage):
    """Jaccard of the sets of test items whose sentence vector is longer than the median."""

    def long_items(name):
        norms = np.linalg.norm(gate.outputs(name, "test", stage=stage)["embeddings"], axis=1)
        return norms > np.median(norms)

    agreement = set_agreement(
        long_items(pair.reference),
        long_items(pair.candidate),
        n_bootstrap=gate.settings.bootstrap,
        seed=gate.settings.seed,
    )
    return ComparisonResult(
        characteristic="norm_agreement",
        reference=pair.reference,
        candidate=pair.candidate,
        figure_name="long-vector Jaccard",
        figure=agreement.figure,
        n=len(gate.data.test),
        threshold=gate.threshold("norm_agreement"),
        threshold_on=gate.settings.threshold_on,
        gating=pair.gating,
        chance=agreement.chance,
        corrected=agreement.corrected,
        ci_low=agreement.ci_low,
        ci_high=agreement.ci_high,
    )


def pytest_miniature_characteristics(config):
    return [
        Characteristic(
            "norm_agreement",
            "norm agreement",
            compare_norms,
            default_threshold=0.2,
            encodes=("test",),
            fix="the candidate gives its long sentence vectors to other items",
            evidence_title="Items with long vectors under one model only",
        )
    ]
