"""Small task data written by the project itself (never copied from a dataset).

Deterministic generators for the offline default and the tests: short movie reviews
with a sentiment label (the in-distribution task, like IMDB) and news-style sentences
(the out-of-distribution challenge set, like NewsQA against SQuAD). The same seed gives
the same items on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_SUBJECTS = [
    "the film", "this movie", "the sequel", "the director's new picture", "the story",
    "the script", "the acting", "the lead performance", "the soundtrack", "the ending",
    "the cinematography", "the dialogue", "the second half", "the opening scene",
    "the cast", "the plot", "the pacing", "the special effects", "the humour", "the villain",
]
_POSITIVE = [
    "wonderful", "brilliant", "moving", "gripping", "delightful", "superb", "charming",
    "beautiful", "clever", "hilarious", "touching", "memorable", "stunning", "excellent",
    "heartfelt", "thrilling", "inventive", "warm", "sharp", "masterful",
]
_NEGATIVE = [
    "boring", "dull", "clumsy", "awful", "tedious", "predictable", "weak", "messy",
    "forgettable", "painful", "lifeless", "silly", "bland", "confusing", "terrible",
    "shallow", "annoying", "flat", "sloppy", "disappointing",
]
_INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "utterly ", "surprisingly ", "genuinely "]
_OPENERS = [
    "", "", "Honestly, ", "I thought ", "Overall, ", "To be fair, ", "In my opinion, ",
    "From start to finish, ", "My friends agreed that ", "Sadly or not, ",
]
_CLOSERS = [
    "", "", " I would watch it again.", " I left the cinema early.", " Worth the ticket.",
    " Not worth the ticket.", " The popcorn was fine.", " My kids had opinions too.",
    " It ran for two hours.", " The theatre was half empty.",
]
_NEWS_SUBJECTS = [
    "the central bank", "the finance minister", "city council", "the weather service",
    "the shipping company", "local police", "the health ministry", "striking workers",
    "the electricity regulator", "the football federation", "researchers at the university",
    "the airline", "the opposition party", "the border agency", "the stock exchange",
]
_NEWS_VERBS = [
    "announced", "denied", "confirmed", "postponed", "approved", "criticised",
    "reported", "investigated", "proposed", "rejected",
]
_NEWS_OBJECTS = [
    "a rise in interest rates", "new flood defences", "the annual budget", "a port expansion",
    "a vaccination campaign", "higher fuel prices", "an inquiry into the merger",
    "the election timetable", "record rainfall in the north", "a ban on night flights",
    "quarterly trade figures", "a strike at the container terminal", "tax relief for farmers",
]
_NEWS_TAILS = [
    " on Tuesday.", " after a late-night session.", ", according to officials.",
    ", sources said.", " despite protests.", " amid growing pressure.", " in a brief statement.",
]


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: int


def sentiment_reviews(n: int, *, seed: int = 0, noise: float = 0.08) -> list[LabelledText]:
    """``n`` short reviews, balanced positive (1) / negative (0).

    Each review has one or two clauses; negation ("not") flips a clause, and a ``noise``
    fraction carries a contrary second clause, so the task is learnable but not trivial.
    """
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = i % 2
        items.append(LabelledText(_review(rng, label, noise), label))
    rng.shuffle(items)
    return items


def _clause(rng: random.Random, positive: bool) -> str:
    negate = rng.random() < 0.2
    word_positive = positive != negate
    adjective = rng.choice(_POSITIVE if word_positive else _NEGATIVE)
    verb = "was not" if negate else rng.choice(["was", "is", "felt", "seemed"])
    return f"{rng.choice(_SUBJECTS)} {verb} {rng.choice(_INTENSIFIERS)}{adjective}"


def _review(rng: random.Random, label: int, noise: float) -> str:
    text = rng.choice(_OPENERS) + _clause(rng, bool(label))
    if rng.random() < 0.5:
        contrary = rng.random() < noise
        joiner = rng.choice([", and ", ", while ", " and "]) if not contrary else ", but "
        text += joiner + _clause(rng, bool(label) != contrary)
    text = text[0].upper() + text[1:] + "." + rng.choice(_CLOSERS)
    return text


def news_sentences(n: int, *, seed: int = 0) -> list[str]:
    """``n`` news-style sentences: the out-of-distribution challenge set for reviews."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentence = (
            f"{rng.choice(_NEWS_SUBJECTS)} {rng.choice(_NEWS_VERBS)} "
            f"{rng.choice(_NEWS_OBJECTS)}{rng.choice(_NEWS_TAILS)}"
        )
        out.append(sentence[0].upper() + sentence[1:])
    return out
