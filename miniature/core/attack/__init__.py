"""BERT-Attack (paper, section 6), offline: its settings, the recipe, two engines and the
runner that attacks a gate's models and stores their outcomes.

Modules, each importing only those before it: :mod:`~miniature.core.attack.settings`
(:class:`AttackSettings`), :mod:`~miniature.core.attack.textattack_offline` (TextAttack
without a network), :mod:`~miniature.core.attack.lexicon` (the antonym filter's sentiment
lexicon), :mod:`~miniature.core.attack.recipe` (the recipe, from TextAttack's parts),
:mod:`~miniature.core.attack.engine` (the batched engine), :mod:`~miniature.core.attack.runner`
(sampling, journals, shards, :class:`AttackRunner`). Two engines run the same attack with
the same outcomes item by item (:attr:`AttackSettings.engine`): ``"textattack"`` one item
at a time, ``"batched"`` (the default) many items in lockstep with their model calls
batched and the attack model's work shared across targets and runs.

Importing this package is cheap: TextAttack and torch are imported only when an attack runs.
Table 3's figures and the comparison of two targets are a characteristic's
(:mod:`miniature.core.characteristics.adversarial`).
"""

from __future__ import annotations

from miniature.core.attack.runner import (
    AttackHost,
    AttackRunner,
    attack_model_outcomes,
    gather_shards,
    make_target_wrapper,
    sample_items,
    shard_key,
    transfer_predictions,
)
from miniature.core.attack.settings import (
    DEFAULT_SAMPLE_SIZE,
    ENGINES,
    RESULTS,
    SIMILARITY_ENCODER,
    SIMILARITY_THRESHOLD,
    AttackSettings,
)
from miniature.core.attack.textattack_offline import english_stopwords, prepare_textattack

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "ENGINES",
    "RESULTS",
    "SIMILARITY_ENCODER",
    "SIMILARITY_THRESHOLD",
    "AttackHost",
    "AttackRunner",
    "AttackSettings",
    "attack_model_outcomes",
    "english_stopwords",
    "gather_shards",
    "make_target_wrapper",
    "prepare_textattack",
    "sample_items",
    "shard_key",
    "transfer_predictions",
]
