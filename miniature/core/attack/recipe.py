"""TextAttack components for the offline BERT-Attack (imported lazily by the runner).

Importing this module imports TextAttack (and through it torch and flair), so
:mod:`miniature.core.attack.runner` imports it only inside functions, and it calls
:func:`~miniature.core.attack.textattack_offline.prepare_textattack` first, which makes
the import work offline.

The attack is TextAttack's ``BERTAttackLi2020`` recipe rebuilt from its parts so that it
runs offline on any local model:

* ``WordSwapMaskedLM(method="bert-attack", max_candidates=48)`` (the paper's 48; the
  recipe now defaults to 8) over the attack model passed in, encoding without padding;
  a word of several sub-words gets 4 candidates per sub-word and at most 24 combinations
  ranked by perplexity, as in Li et al.'s released code (TextAttack 0.3.11 enumerates
  48**n combinations and does not sort them);
* ``GreedyWordSwapWIR(wir_method="unk")``, ``RepeatModification``,
  ``StopwordModification`` (NLTK's English list, shipped in ``miniature/resources``) and
  ``MaxWordsPerturbed(max_percent=0.4)``, plus the paper's K=3 ("the attack first finds
  the top K important words") as a cap of K words changed per text (``top_k_words``);
* **difference:** the recipe's Universal Sentence Encoder constraint downloads a model
  from TF Hub, so it is replaced by another real sentence encoder that ships offline:
  the cosine similarity of all-MiniLM-L6-v2's mean-pooled embeddings
  (:data:`~miniature.core.attack.settings.SIMILARITY_ENCODER`), ``compare_against_original=True``, no window. Its
  scores are not USE scores, so the recipe's threshold (0.2) is not reused: 0.8
  (:data:`~miniature.core.attack.settings.SIMILARITY_THRESHOLD`) keeps a perturbed text only if it is closer to its
  original than 99 % of pairs of distinct built-in reviews are to each other.
  (``similarity_encoder=None`` restores the earlier stand-in: the attack model's own
  mean-pooled embeddings.)
* Li et al. filter antonyms out of the masked LM's proposals for sentiment tasks (a
  synonym dictionary of counter-fitted vectors, a download); TextAttack's recipe does not.
  Here a substitute may not carry a sentiment the replaced word lacks, by the VADER
  lexicon (MIT, shipped in ``miniature/resources/sentiment``) plus a few review adjectives
  it lacks (``sentiment_filter``; off: any proposal is tried, as in TextAttack).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniature.core.attack.textattack_offline import prepare_textattack

prepare_textattack()

import numpy as np  # noqa: E402
import textattack  # noqa: E402
import torch  # noqa: E402
from textattack.constraints import Constraint  # noqa: E402
from textattack.constraints.semantics.sentence_encoders import SentenceEncoder  # noqa: E402
from textattack.models.wrappers import ModelWrapper as _TextAttackModelWrapper  # noqa: E402
from textattack.shared import utils as _ta_utils  # noqa: E402
from textattack.transformations import WordSwapMaskedLM  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.attack.settings import AttackSettings
    from miniature.core.models import ModelWrapper


class TargetModelWrapper(_TextAttackModelWrapper):
    """TextAttack's view of a miniature :class:`~miniature.core.models.ModelWrapper` classifier.

    ``__call__`` returns the wrapper's logits (length-sorted, dynamically padded batches,
    never padded to 512), so the attacked model predicts exactly as everywhere else in
    miniature. ``queries`` counts the texts sent to the model (TextAttack's own cache
    hits are not sent) and ``calls`` the batches.
    """

    def __init__(self, wrapper: "ModelWrapper") -> None:
        self.wrapper = wrapper
        self.model = wrapper.model  # TextAttack checks the class (…ForSequenceClassification)
        self.tokenizer = wrapper.tokenizer
        self.queries = 0
        self.calls = 0

    def __call__(self, text_input_list: Sequence[Any], **kwargs: Any) -> np.ndarray:
        items = list(text_input_list)
        if not items:
            return np.zeros((0, int(self.wrapper.num_labels)), dtype=np.float32)
        self.queries += len(items)
        self.calls += 1
        progress, self.wrapper.progress = self.wrapper.progress, False
        try:
            if all(isinstance(item, str) for item in items):
                return self.wrapper.logits(items)
            if all(isinstance(item, tuple) and len(item) == 2 for item in items):
                return self.wrapper.logits([a for a, _ in items], [b for _, b in items])
        finally:
            self.wrapper.progress = progress
        raise TypeError(f"TargetModelWrapper takes texts or (text, text) pairs, got {type(items[0]).__name__}")

    def _tokenize(self, inputs: Sequence[str]) -> list[list[str]]:
        return [
            self.tokenizer.convert_ids_to_tokens(
                self.tokenizer(text, truncation=True, max_length=self.wrapper.max_length)["input_ids"]
            )
            for text in inputs
        ]


class AttackModelSimilarity(SentenceEncoder):
    """Sentence-similarity constraint on the attack model's own mean-pooled embeddings.

    Stands in for the recipe's Universal Sentence Encoder (a TF-Hub download): cosine
    similarity of the last hidden layer, mean-pooled over tokens, with the recipe's
    threshold (0.2), ``compare_against_original=True`` and no window.
    """

    def __init__(self, attack_wrapper: "ModelWrapper", threshold: float = 0.2) -> None:
        super().__init__(threshold=threshold, metric="cosine", compare_against_original=True, window_size=None)
        self.attack_wrapper = attack_wrapper
        self.model = self  # SentenceEncoder._sim_score calls self.model.encode

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        progress, self.attack_wrapper.progress = self.attack_wrapper.progress, False
        try:
            return self.attack_wrapper.encode(list(sentences), pooling="mean")
        finally:
            self.attack_wrapper.progress = progress

    def extra_repr_keys(self) -> list[str]:
        return ["threshold", "metric"]


class SentenceEncoderSimilarity(SentenceEncoder):
    """Sentence-similarity constraint on a real sentence encoder (the recipe's USE stand-in).

    ``encoder`` is a miniature wrapper of a sentence-transformers model (the packaged
    all-MiniLM-L6-v2: mean pooling over tokens, as it was trained; cosine is unaffected by
    its final normalisation). A perturbed text is kept only if its cosine similarity to the
    original is at least ``threshold`` (``compare_against_original=True``, no window).
    Encodings are memoised per encoder and text for the whole process: the original is
    compared with every candidate, and attacks on several targets propose many of the same
    candidate texts.
    """

    def __init__(self, encoder: "ModelWrapper", threshold: float) -> None:
        super().__init__(threshold=threshold, metric="cosine", compare_against_original=True, window_size=None)
        self.encoder = encoder
        self.model = self  # SentenceEncoder._sim_score calls self.model.encode
        self._memo = _MEMO.setdefault(id(encoder), {})

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        missing = [s for s in dict.fromkeys(sentences) if s not in self._memo]
        if missing:
            progress, self.encoder.progress = self.encoder.progress, False
            try:
                vectors = self.encoder.encode(missing, pooling="mean")
            finally:
                self.encoder.progress = progress
            if len(self._memo) > 50000:
                self._memo.clear()
            self._memo.update(zip(missing, vectors))
        return np.stack([self._memo[s] for s in sentences])

    def extra_repr_keys(self) -> list[str]:
        return ["threshold", "metric"]


class SentimentFlipFilter(Constraint):
    """Rejects a substitute that carries a sentiment the replaced word does not have.

    BERT's masked LM ranks antonyms as highly as synonyms ("a *wonderful* film" → "a
    *terrible* film"); such a swap changes what the text says, so it is no adversarial
    example. Li et al. (2020) filter antonyms for sentiment tasks with a synonym dictionary
    (counter-fitted word vectors), which TextAttack's recipe leaves out. Offline, miniature
    uses a sentiment lexicon instead (:func:`~miniature.core.attack.lexicon.word_polarity`):
    a substitute may be neutral or of the replaced word's polarity, never of another.
    """

    def __init__(self) -> None:
        super().__init__(compare_against_original=True)

    def _check_constraint(self, transformed_text: Any, reference_text: Any) -> bool:
        from miniature.core.attack.lexicon import word_polarity

        indices = transformed_text.attack_attrs.get("newly_modified_indices", ())
        for index in indices:
            if index >= len(reference_text.words) or index >= len(transformed_text.words):
                continue
            new = word_polarity(transformed_text.words[index])
            if new and new != word_polarity(reference_text.words[index]):
                return False
        return True


def similarity_encoder(name: str, device: Any = None) -> "ModelWrapper":
    """The sentence encoder named by ``AttackSettings.similarity_encoder``, loaded once."""
    if name not in _ENCODERS:
        from miniature.core.models import load_model

        _ENCODERS[name] = load_model(name, head="encoder", max_length=128, batch_size=64)
    return _ENCODERS[name]


class _DecoderCompatibilityFilter:
    """TextAttack warns that it does not know whether a causal LM suits a classification goal
    function; miniature decides that itself (a decoder answers by scoring its choices)."""

    def filter(self, record: Any) -> bool:
        message = str(record.getMessage())
        return not (
            message.startswith("Unknown if model of class") and ("ForCausalLM" in message or "LMHeadModel" in message)
        )


_ta_utils.logger.addFilter(_DecoderCompatibilityFilter())

_ENCODERS: dict[str, "ModelWrapper"] = {}
_MEMO: dict[int, dict[str, np.ndarray]] = {}


class LocalBertAttackSwap(WordSwapMaskedLM):
    """``WordSwapMaskedLM(method="bert-attack")`` over an already loaded masked LM.

    Differences from TextAttack 0.3.11, none of which change single-token words:

    * texts are encoded without padding (TextAttack pads every query to ``max_length``);
      inputs the model does not take (e.g. DistilBERT and ``token_type_ids``) are dropped
      and tensors go to the model's own device;
    * a word split into several sub-words gets, as in Li et al.'s released code, the top
      ``subword_candidates`` tokens per sub-word and at most ``max_combinations``
      combinations, ranked by perplexity (TextAttack enumerates ``max_candidates ** n``
      combinations, hours for long words, and leaves them unsorted);
    * once ``word_cap`` words are changed it proposes nothing more: every proposal would
      be rejected by ``MaxWordsPerturbed(max_num_words=word_cap)`` anyway (a word is never
      changed twice), so this only saves the masked-LM passes.
    """

    def __init__(self, attack_wrapper: "ModelWrapper", settings: "AttackSettings") -> None:
        model = attack_wrapper.model
        device = next(model.parameters()).device
        super().__init__(
            method="bert-attack",
            masked_language_model=model,
            tokenizer=attack_wrapper.tokenizer,
            max_length=settings.max_length or attack_wrapper.max_length,
            max_candidates=settings.max_candidates,
        )
        model.to(device)  # WordSwapMaskedLM moves it to TextAttack's device; put it back
        self.input_names = set(attack_wrapper.input_names)
        self.subword_candidates = settings.subword_candidates
        self.max_combinations = settings.max_combinations
        self.word_cap = settings.top_k_words

    def _encode_text(self, text: str | list[str]) -> dict[str, torch.Tensor]:
        encoding = self._lm_tokenizer(
            text, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt"
        )
        device = next(self._language_model.parameters()).device
        return {k: v.to(device) for k, v in encoding.items() if k in self.input_names}

    def _get_transformations(self, current_text: Any, indices_to_modify: Any) -> list[Any]:
        if self.word_cap is not None and len(current_text.attack_attrs.get("modified_indices", ())) >= self.word_cap:
            return []
        return super()._get_transformations(current_text, indices_to_modify)

    def _bert_attack_replacement_words(
        self, current_text: Any, index: int, id_preds: torch.Tensor, masked_lm_logits: torch.Tensor
    ) -> list[str]:
        tokenizer = self._lm_tokenizer
        masked_text = current_text.replace_word_at_index(index, tokenizer.mask_token)
        masked_ids = self._encode_text(masked_text.text)["input_ids"][0].tolist()
        word_tokens = tokenizer.encode(current_text.words[index], add_special_tokens=False)
        try:
            masked_index = masked_ids.index(tokenizer.mask_token_id)
        except ValueError:  # the word lies beyond max_length
            return []
        end = min(masked_index + len(word_tokens), self.max_length, id_preds.shape[0])
        positions = list(range(masked_index, end))
        if not positions:
            return []
        model_type = self._language_model.config.model_type
        if len(positions) == 1:
            words: list[str] = []
            for token_id in id_preds[positions[0]].tolist():
                token = tokenizer.convert_ids_to_tokens(token_id)
                if _ta_utils.is_one_word(token) and not _ta_utils.check_if_subword(token, model_type, index == 0):
                    words.append(token)
            return words
        per_position = id_preds[positions, : self.subword_candidates].tolist()
        combinations = list(itertools.islice(itertools.product(*per_position), self.max_combinations))
        candidates = torch.tensor(combinations, dtype=torch.long)  # (m, n)
        log_probs = torch.log_softmax(masked_lm_logits[positions].float(), dim=-1)  # (n, V)
        nll = -log_probs[torch.arange(len(positions)).unsqueeze(0), candidates]  # (m, n)
        perplexity = nll.mean(dim=1).exp()
        words = []
        for row in torch.argsort(perplexity, stable=True).tolist():
            word = "".join(tokenizer.convert_ids_to_tokens(combinations[row])).replace("##", "")
            if _ta_utils.is_one_word(word) and word not in words:
                words.append(word)
        return words[: self.max_candidates]

    def extra_repr_keys(self) -> list[str]:
        return super().extra_repr_keys() + ["subword_candidates", "max_combinations", "word_cap"]


def build_attack(
    attack_wrapper: "ModelWrapper",
    target: TargetModelWrapper,
    settings: "AttackSettings",
    stopwords: Sequence[str],
    *,
    transformation: Any = None,
    similarity: Any = None,
    model_batch_size: int | None = None,
) -> "textattack.Attack":
    """BERT-Attack from TextAttack's parts, as ``BERTAttackLi2020.build`` assembles them.

    ``transformation``, ``similarity`` and ``model_batch_size`` replace the masked-LM swap,
    the similarity constraint and the goal function's batch size (the batched engine
    routes them through shared, batched model calls; the search is unchanged)."""
    import logging

    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import (
        RepeatModification,
        StopwordModification,
    )
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    transformation = transformation or LocalBertAttackSwap(attack_wrapper, settings)
    constraints: list[Any] = [RepeatModification(), StopwordModification(stopwords=stopwords)]
    if settings.max_percent is not None or settings.top_k_words is not None:
        constraints.append(MaxWordsPerturbed(max_num_words=settings.top_k_words, max_percent=settings.max_percent))
    if settings.sentiment_filter:
        constraints.append(SentimentFlipFilter())
    if settings.similarity_threshold is not None:
        if similarity is not None:  # the batched engine's, reading the shared store
            constraints.append(similarity)
        elif settings.similarity_encoder is None:
            constraints.append(AttackModelSimilarity(attack_wrapper, settings.similarity_threshold))
        else:
            constraints.append(
                SentenceEncoderSimilarity(
                    similarity_encoder(settings.similarity_encoder), settings.similarity_threshold
                )
            )
    ta_logger = logging.getLogger("textattack.shared.utils.install")
    level = ta_logger.level
    ta_logger.setLevel(logging.WARNING)  # quiet "goal function compatible with model" notes
    try:
        goal = UntargetedClassification(
            target,
            query_budget=float("inf") if settings.query_budget is None else settings.query_budget,
            model_batch_size=model_batch_size or target.wrapper.batch_size,
        )
    finally:
        ta_logger.setLevel(level)
    unk = getattr(target.tokenizer, "unk_token", None) or "[UNK]"
    search = GreedyWordSwapWIR(wir_method="unk", unk_token=unk)
    return textattack.Attack(goal, constraints, transformation, search)
