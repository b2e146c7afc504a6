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
    "the film",
    "this movie",
    "the sequel",
    "the director's new picture",
    "the story",
    "the script",
    "the acting",
    "the lead performance",
    "the soundtrack",
    "the ending",
    "the cinematography",
    "the dialogue",
    "the second half",
    "the opening scene",
    "the cast",
    "the plot",
    "the pacing",
    "the special effects",
    "the humour",
    "the villain",
]
_POSITIVE = [
    "wonderful",
    "brilliant",
    "moving",
    "gripping",
    "delightful",
    "superb",
    "charming",
    "beautiful",
    "clever",
    "hilarious",
    "touching",
    "memorable",
    "stunning",
    "excellent",
    "heartfelt",
    "thrilling",
    "inventive",
    "warm",
    "sharp",
    "masterful",
]
_NEGATIVE = [
    "boring",
    "dull",
    "clumsy",
    "awful",
    "tedious",
    "predictable",
    "weak",
    "messy",
    "forgettable",
    "painful",
    "lifeless",
    "silly",
    "bland",
    "confusing",
    "terrible",
    "shallow",
    "annoying",
    "flat",
    "sloppy",
    "disappointing",
]
_INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "utterly ", "surprisingly ", "genuinely "]
_OPENERS = [
    "",
    "",
    "Honestly, ",
    "I thought ",
    "Overall, ",
    "To be fair, ",
    "In my opinion, ",
    "From start to finish, ",
    "My friends agreed that ",
    "Sadly or not, ",
]
_CLOSERS = [
    "",
    "",
    "",
    " The popcorn was fine.",
    " My kids had opinions too.",
    " It ran for two hours.",
    " The theatre was half empty.",
    " We saw it on a Sunday.",
]
_NEWS_SUBJECTS = [
    "the central bank",
    "the finance minister",
    "city council",
    "the weather service",
    "the shipping company",
    "local police",
    "the health ministry",
    "striking workers",
    "the electricity regulator",
    "the football federation",
    "researchers at the university",
    "the airline",
    "the opposition party",
    "the border agency",
    "the stock exchange",
]
_NEWS_VERBS = [
    "announced",
    "denied",
    "confirmed",
    "postponed",
    "approved",
    "criticised",
    "reported",
    "investigated",
    "proposed",
    "rejected",
]
_NEWS_OBJECTS = [
    "a rise in interest rates",
    "new flood defences",
    "the annual budget",
    "a port expansion",
    "a vaccination campaign",
    "higher fuel prices",
    "an inquiry into the merger",
    "the election timetable",
    "record rainfall in the north",
    "a ban on night flights",
    "quarterly trade figures",
    "a strike at the container terminal",
    "tax relief for farmers",
]
_NEWS_TAILS = [
    " on Tuesday.",
    " after a late-night session.",
    ", according to officials.",
    ", sources said.",
    " despite protests.",
    " amid growing pressure.",
    " in a brief statement.",
]


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: int


def sentiment_reviews(n: int, *, seed: int = 0, noise: float = 0.08, mixed: float = 0.65) -> list[LabelledText]:
    """``n`` short reviews, balanced positive (1) / negative (0), all distinct.

    Like real reviews, many are mixed: the verdict is carried by the clause after "but",
    by the main clause after "although", or by the first clause before "even if", and
    "not" flips a clause. So the label depends on structure, not only on which words occur
    (a bag of words cannot reach 100 %), and models of different sizes err on different
    items. ``mixed`` is the fraction of such mixed reviews (0: every review is plain, an
    easy task for tiny test models). A ``noise`` fraction adds a contrary remark that does
    not change the verdict.
    """
    if not 0.0 <= mixed <= 1.0:
        raise ValueError(f"mixed must be in [0, 1], got {mixed}")
    rng = random.Random(seed)
    items = []
    seen: set[str] = set()
    for i in range(n):
        label = i % 2
        text = _review(rng, label, noise, mixed)
        while text in seen:  # distinct items: exact duplicates would tie in every kNN list
            text = _review(rng, label, noise, mixed)
        seen.add(text)
        items.append(LabelledText(text, label))
    rng.shuffle(items)
    return items


def _clause(rng: random.Random, positive: bool) -> str:
    negate = rng.random() < 0.2
    word_positive = positive != negate
    adjective = rng.choice(_POSITIVE if word_positive else _NEGATIVE)
    verb = "was not" if negate else rng.choice(["was", "is", "felt", "seemed"])
    return f"{rng.choice(_SUBJECTS)} {verb} {rng.choice(_INTENSIFIERS)}{adjective}"


def _review(rng: random.Random, label: int, noise: float, mixed: float) -> str:
    verdict, other = bool(label), not bool(label)
    shape = rng.random()
    if shape >= mixed:  # plain: one clause, or two that agree
        text = rng.choice(_OPENERS) + _clause(rng, verdict)
        if rng.random() < 0.5:
            text += rng.choice([", and ", ", while ", " and "]) + _clause(rng, verdict)
    elif shape < mixed * 0.45:  # contrast: the clause after "but" carries the verdict
        text = rng.choice(_OPENERS) + _clause(rng, other) + ", but " + _clause(rng, verdict)
    elif shape < mixed * 0.75:  # concession: the main clause carries it
        text = "Although " + _clause(rng, other) + ", " + _clause(rng, verdict)
    else:  # the verdict first, a reservation after
        text = rng.choice(_OPENERS) + _clause(rng, verdict) + ", even if " + _clause(rng, other)
    if rng.random() < noise * mixed:
        text += ". Still, " + _clause(rng, other) + " in places"
    text = text[0].upper() + text[1:] + "." + rng.choice(_CLOSERS)
    return text


def news_sentences(n: int, *, seed: int = 0) -> list[str]:
    """``n`` news-style sentences: the out-of-distribution challenge set for reviews."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        sentence = (
            f"{rng.choice(_NEWS_SUBJECTS)} {rng.choice(_NEWS_VERBS)} "
            f"{rng.choice(_NEWS_OBJECTS)}{rng.choice(_NEWS_TAILS)}"
        )
        if len(seen) < 9000 and sentence in seen:  # distinct while the templates allow it
            continue
        seen.add(sentence)
        out.append(sentence[0].upper() + sentence[1:])
    return out


# -- extractive question answering (SQuAD 2.0-like and NewsQA-like) --------------------------
# Invented people, places and dates: every answer is a span of the generated context, and a
# share of questions ask for something the context never says (SQuAD 2.0's unanswerable).
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from miniature.core.tasks.qa import QAExample
_QA_FIRST = [
    "Mira",
    "Oren",
    "Talia",
    "Bastian",
    "Ilse",
    "Corvin",
    "Nadia",
    "Teodor",
    "Linnea",
    "Emeric",
    "Sabine",
    "Jorah",
    "Petra",
    "Aldo",
    "Yusra",
    "Fenna",
    "Caspar",
    "Odile",
]
_QA_LAST = [
    "Talvek",
    "Basquill",
    "Quennell",
    "Harrowgate",
    "Pellam",
    "Corriveau",
    "Damaske",
    "Ferrand",
    "Ivanko",
    "Marlowe",
    "Ostergaard",
    "Vantreck",
    "Selwyn",
    "Brauley",
]
_QA_PLACES = [
    "Velmora",
    "Port Kessing",
    "Aldridge Falls",
    "Castelmoor",
    "Brennick",
    "Sundholm",
    "Caraway Bay",
    "Mistral Hill",
    "Tarnow Vale",
    "New Halden",
    "Greyfen",
    "Lorimund",
    "Ashcombe",
    "Kelvarra",
]
_QA_OCCUPATIONS = [
    "clockmaker",
    "botanist",
    "cartographer",
    "violinist",
    "engineer",
    "glassblower",
    "astronomer",
    "architect",
    "chemist",
    "novelist",
    "shipbuilder",
    "painter",
]
_QA_INSTITUTIONS = [
    "Observatory",
    "Music Academy",
    "Glassworks",
    "Map Society",
    "Free Library",
    "Rowing Club",
    "Botanical Garden",
    "School of Design",
]
_QA_WORKS = [
    "a clock that ran for a century",
    "a map of the northern rivers",
    "a cantata for three choirs",
    "a bridge over the river Ostra",
    "a catalogue of alpine mosses",
    "a novel about lighthouse keepers",
    "a telescope made of recycled brass",
    "a ferry that crossed the bay in winter",
]
_QA_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_QA_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_QA_PROJECTS = [
    "sea wall",
    "tram line",
    "water plant",
    "harbour bridge",
    "grain terminal",
    "flood barrier",
    "district hospital",
    "ring road",
]
_QA_CURRENCIES = ["crowns", "marks", "florins", "talers"]


class _Paragraph:
    """Builds a context piece by piece, remembering where each answer starts."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: dict[str, tuple[str, int]] = {}

    def add(self, *pieces: str | tuple[str, str]) -> None:
        for piece in pieces:
            if isinstance(piece, tuple):
                key, value = piece
                self.spans[key] = (value, len(self.text))
                self.text += value
            else:
                self.text += piece


def _qa_example(identifier: str, question: str, paragraph: _Paragraph, key: str | None) -> QAExample:
    from miniature.core.tasks.qa import QAExample

    if key is None:
        return QAExample(identifier, question, paragraph.text)
    text, start = paragraph.spans[key]
    return QAExample(identifier, question, paragraph.text, (text,), (start,))


def _unanswerable_positions(rng: random.Random, n: int, share: float) -> set[int]:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"unanswerable must be a share in [0, 1], got {share}")
    return set(rng.sample(range(n), round(n * share)))


def qa_items(n: int, seed: int = 0, unanswerable: float = 0.33) -> list[QAExample]:
    """``n`` short SQuAD 2.0-style items (:class:`~miniature.core.tasks.qa.QAExample`).

    Each is a generated biography of an invented person; answers are spans of it, and
    ``round(n * unanswerable)`` questions ask what the paragraph never says.
    """
    rng = random.Random(seed)
    empty = _unanswerable_positions(rng, n, unanswerable)
    items = []
    for i in range(n):
        first, last = rng.choice(_QA_FIRST), rng.choice(_QA_LAST)
        name = f"{first} {last}"
        birthplace, home = rng.sample(_QA_PLACES, 2)
        born, moved = sorted(rng.sample(range(1780, 1960), 2))
        moved = max(moved, born + 18)
        occupation = rng.choice(_QA_OCCUPATIONS)
        article = "an" if occupation[0] in "aeiou" else "a"
        institution = f"{home} {rng.choice(_QA_INSTITUTIONS)}"
        work = rng.choice(_QA_WORKS)
        p = _Paragraph()
        if rng.random() < 0.5:
            p.add(
                f"{name} was {article} ",
                ("occupation", occupation),
                " born in ",
                ("birthplace", birthplace),
                " in ",
                ("born", str(born)),
                ". ",
            )
        else:
            p.add(
                "Born in ",
                ("birthplace", birthplace),
                " in ",
                ("born", str(born)),
                f", {name} trained as {article} ",
                ("occupation", occupation),
                ". ",
            )
        p.add(
            "In ",
            ("moved", str(moved)),
            f", {first} moved to ",
            ("home", home),
            ", where they founded the ",
            ("institution", institution),
            ". ",
        )
        p.add(f"{last} is best remembered for ", ("work", work), ".")
        if rng.random() < 0.5:
            p.add(f" The family name {last} is still common in {home}.")
        answerable = [
            (f"Where was {name} born?", "birthplace"),
            (f"In which year was {name} born?", "born"),
            (f"What was {name}'s profession?", "occupation"),
            (f"Where did {name} move in {moved}?", "home"),
            (f"When did {first} move to {home}?", "moved"),
            (f"What did {name} found in {home}?", "institution"),
            (f"What is {last} best remembered for?", "work"),
        ]
        other = rng.choice([f for f in _QA_FIRST if f != first])
        unanswerable_questions = [
            f"Where did {name} die?",
            f"Who taught {name} to be {article} {occupation}?",
            f"In which year did {first} leave {home}?",
            f"Where was {other} {last} born?",
            f"What did {name} found in {birthplace}?",
        ]
        identifier = f"qa-{seed}-{i:05d}"
        if i in empty:
            items.append(_qa_example(identifier, rng.choice(unanswerable_questions), p, None))
        else:
            question, key = rng.choice(answerable)
            items.append(_qa_example(identifier, question, p, key))
    return items


def _news_filler(rng: random.Random) -> str:
    sentence = (
        f"{rng.choice(_NEWS_SUBJECTS)} {rng.choice(_NEWS_VERBS)} {rng.choice(_NEWS_OBJECTS)}{rng.choice(_NEWS_TAILS)}"
    )
    return sentence[0].upper() + sentence[1:]


def news_qa_items(n: int, seed: int = 0, unanswerable: float = 0.1) -> list[QAExample]:
    """``n`` NewsQA-style items: long news stories (several times a :func:`qa_items`
    paragraph) with questions on facts buried among unrelated reports; the challenge
    set for a model fine-tuned on :func:`qa_items`.
    """
    rng = random.Random(seed + 7919)
    empty = _unanswerable_positions(rng, n, unanswerable)
    items = []
    for i in range(n):
        city = rng.choice(_QA_PLACES)
        spokesperson = f"{rng.choice(_QA_FIRST)} {rng.choice(_QA_LAST)}"
        agency = rng.choice(_NEWS_SUBJECTS)
        project = rng.choice(_QA_PROJECTS)
        weekday = rng.choice(_QA_WEEKDAYS)
        residents = f"{rng.randrange(2, 90)},{rng.randrange(0, 10)}00"
        cost = f"{rng.randrange(3, 900)} million {rng.choice(_QA_CURRENCIES)}"
        date = f"{rng.choice(_QA_MONTHS)} {rng.randrange(1, 29)}"
        p = _Paragraph()
        p.add(("city", city), f", {date} -- ")
        p.add(" ".join(_news_filler(rng) for _ in range(rng.randrange(2, 5))), " ")
        p.add(
            f"Plans for a new {project} were confirmed on ",
            ("weekday", weekday),
            ", said ",
            ("spokesperson", spokesperson),
            f", speaking for {agency}. ",
        )
        p.add(" ".join(_news_filler(rng) for _ in range(rng.randrange(2, 5))), " ")
        p.add(
            f"The {project} will cost ",
            ("cost", cost),
            " and should protect about ",
            ("residents", residents),
            " residents. ",
        )
        p.add(" ".join(_news_filler(rng) for _ in range(rng.randrange(3, 7))))
        answerable = [
            (f"Who spoke for {agency} about the {project}?", "spokesperson"),
            (f"How much will the new {project} cost?", "cost"),
            (f"How many residents should the {project} protect?", "residents"),
            (f"On which day were the plans for the {project} confirmed?", "weekday"),
            ("Where was the story reported from?", "city"),
        ]
        unanswerable_questions = [
            f"When will the {project} be finished?",
            f"Who designed the {project}?",
            f"How long is the new {project}?",
        ]
        identifier = f"newsqa-{seed}-{i:05d}"
        if i in empty:
            items.append(_qa_example(identifier, rng.choice(unanswerable_questions), p, None))
        else:
            question, key = rng.choice(answerable)
            items.append(_qa_example(identifier, question, p, key))
    return items


# -- the demo's reviews: several sentences, a verdict that is sometimes left implicit --------
# Film reviews are the task (like IMDB); book reviews written with the same sentiment
# vocabulary and sentence shapes are the challenge set's shifted domain (like NewsQA beside
# SQuAD: the same kind of text on another topic), so out-of-distribution detection is not
# trivial. A review's label is its author's verdict; its aspect sentences lean towards the
# verdict only by a chance that varies per review, and about a third state no verdict, so a
# share of reviews is genuinely ambiguous (mostly contrary aspects, no verdict) as real
# mixed reviews are: no model reaches 100 %.
_DOMAINS: dict[str, dict[str, list[str]]] = {
    "film": {
        "subjects": _SUBJECTS,
        "context": [
            "I saw it on a Sunday afternoon.",
            "We went with a group of friends.",
            "The theatre was half empty.",
            "It runs for about two hours.",
            "I had not read anything about it beforehand.",
            "My partner picked it.",
            "I watched it at home on a rainy evening.",
            "It opened last Friday.",
        ],
        "for": [
            "I would happily watch it again.",
            "Go and see it.",
            "It is worth the ticket.",
            "I recommend it.",
            "It is one of the better films this year.",
            "I left the cinema smiling.",
            "Count me as a fan.",
        ],
        "against": [
            "I would not watch it again.",
            "Skip it.",
            "It is not worth the ticket.",
            "I cannot recommend it.",
            "It is one of the weaker films this year.",
            "I left the cinema annoyed.",
            "I wanted my evening back.",
        ],
    },
    "book": {
        "subjects": [
            "the novel",
            "this book",
            "the sequel",
            "the author's new book",
            "the story",
            "the prose",
            "the writing",
            "the narrator",
            "the main character",
            "the ending",
            "the translation",
            "the dialogue",
            "the second half",
            "the opening chapter",
            "the characters",
            "the plot",
            "the pacing",
            "the world building",
            "the humour",
            "the villain",
        ],
        "context": [
            "I read it over a long weekend.",
            "Our book club chose it.",
            "The paperback has about three hundred pages.",
            "I bought it at the airport.",
            "I had not read the author before.",
            "A friend lent me her copy.",
            "I read it on the train to work.",
            "It came out last spring.",
            "I listened to the audiobook version.",
            "The hardback cover is lovely.",
            "It took me two weeks to get through it.",
            "I borrowed it from the library.",
        ],
        "for": [
            "I would happily read it again.",
            "Go and buy it.",
            "It is worth the price.",
            "I recommend it.",
            "It is one of the better books this year.",
            "I finished it smiling.",
            "Count me as a fan.",
        ],
        "against": [
            "I would not read it again.",
            "Skip it.",
            "It is not worth the price.",
            "I cannot recommend it.",
            "It is one of the weaker books this year.",
            "I finished it annoyed.",
            "I wanted my weekend back.",
        ],
    },
}


#: how often a review opens with a remark on the circumstances (book reviewers more often
#: say how and where they read: a difference of shape beside the difference of topic)
_CONTEXT_SHARE = {"film": 0.25, "book": 0.7}


def _domain_clause(rng: random.Random, positive: bool, subjects: list[str]) -> str:
    negate = rng.random() < 0.2
    word_positive = positive != negate
    adjective = rng.choice(_POSITIVE if word_positive else _NEGATIVE)
    verb = "was not" if negate else rng.choice(["was", "is", "felt", "seemed"])
    return f"{rng.choice(subjects)} {verb} {rng.choice(_INTENSIFIERS)}{adjective}"


def _aspect_sentence(rng: random.Random, positive: bool, subjects: list[str]) -> tuple[str, int]:
    """One sentence whose overall polarity is ``positive``, and its weight in the verdict:
    2 for two clauses that agree, 1 for one clause or a contrast (whose second or main
    clause carries it)."""
    shape = rng.random()
    clause = _domain_clause
    weight = 1
    if shape < 0.6:
        text = clause(rng, positive, subjects)
        if rng.random() < 0.6:
            text += rng.choice([", and ", " and ", ", while "]) + clause(rng, positive, subjects)
            weight = 2
    elif shape < 0.82:
        text = clause(rng, not positive, subjects) + ", but " + clause(rng, positive, subjects)
    else:
        text = "Although " + clause(rng, not positive, subjects) + ", " + clause(rng, positive, subjects)
    return text[0].upper() + text[1:] + ".", weight


def _scored_review(rng: random.Random, target: int, domain: str, verdict_share: float) -> tuple[str, float]:
    words = _DOMAINS[domain]
    lean = rng.choice([0.95, 0.8, 0.6])  # how strongly the aspects agree with the author
    sentences, score = [], 0.0
    if rng.random() < _CONTEXT_SHARE[domain]:
        sentences.append(rng.choice(words["context"]))
    for _ in range(rng.choice([2, 2, 3, 3, 4])):
        positive = bool(target) == (rng.random() < lean)
        text, weight = _aspect_sentence(rng, positive, words["subjects"])
        sentences.append(text)
        score += weight if positive else -weight
    if rng.random() < verdict_share:
        opener = rng.choice(["", "", "Overall, ", "In the end, ", "All in all, "])
        verdict = rng.choice(words["for" if target else "against"])
        lowered = verdict if verdict.startswith("I ") else verdict[0].lower() + verdict[1:]
        sentences.append(opener + lowered if opener else verdict)
        score += 1.5 if target else -1.5
    return " ".join(sentences), score


def domain_review(rng: random.Random, label: int, domain: str = "film", *, verdict_share: float = 0.5) -> str:
    """A review of several sentences whose evidence, weighed, gives ``label`` (1 positive,
    0 negative) or is tied (a genuinely ambiguous review: the author's verdict decides).

    The weighing: each aspect sentence counts 1 (2 for two agreeing clauses) towards its
    polarity, a closing verdict 1.5; so no single word decides a review with much evidence,
    and a review with little can be turned by changing a word or two.
    """
    while True:
        text, score = _scored_review(rng, label, domain, verdict_share)
        if score == 0 or (score > 0) == bool(label):
            return text


def domain_reviews(
    n: int, *, domain: str = "film", seed: int = 0, verdict_share: float = 0.5, noise: float = 0.04
) -> list[LabelledText]:
    """``n`` distinct reviews of ``domain`` (``film`` or ``book``), balanced, shuffled.

    A ``noise`` share of labels (every 1/noise-th item before shuffling) is flipped, as
    annotators of real review data disagree with the text now and then.
    """
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(_DOMAINS)}, got {domain!r}")
    rng = random.Random(f"{domain}-{seed}")
    items, seen = [], set()
    for i in range(n):
        text = domain_review(rng, i % 2, domain, verdict_share=verdict_share)
        while text in seen:
            text = domain_review(rng, i % 2, domain, verdict_share=verdict_share)
        seen.add(text)
        flipped = noise > 0 and i % max(1, round(1 / noise)) == 7 % max(1, round(1 / noise))
        items.append(LabelledText(text, 1 - i % 2 if flipped else i % 2))
    rng.shuffle(items)
    return items
