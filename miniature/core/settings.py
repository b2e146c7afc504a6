"""The plugin's options: names (as constants the tests import), parsers, defaults, ini keys.

No heavy imports here: ``pytest --help`` loads this module. Each option has an ini
equivalent ``miniature_<name>`` in ``[tool.pytest.ini_options]``; the command line
overrides the ini value. Parsers raise ``argparse.ArgumentTypeError`` so a bad value
fails at parse time naming the option and what it accepts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniature.core.gguf_model import RUNTIMES as GGUF_RUNTIMES
from miniature.core.onnx_model import ROLES as ONNX_ROLES
from miniature.core.registry import BUILTIN

GROUP = "miniature"

REFERENCE = "--reference"
CANDIDATE = "--candidate"
REFERENCE_BASE = "--reference-base"
CANDIDATE_BASE = "--candidate-base"
TASK = "--task"
TRAIN_DATA = "--train-data"
HOLDOUT_DATA = "--holdout-data"
TEST_DATA = "--test-data"
CHALLENGE_DATA = "--challenge-data"
TEXT_COLUMN = "--text-column"
LABEL_COLUMN = "--label-column"
LABEL_MAP = "--label-map"
DATA_LIMIT = "--data-limit"
K = "--k"
K_SWEEP = "--k-sweep"
KNN_INDEX = "--knn-index"
VECTORS = "--vectors"
THRESHOLDS = "--threshold"
ATTACK_DROP_TOLERANCE = "--attack-drop-tolerance"
THRESHOLD_ON = "--threshold-on"
OOD_KEEP = "--ood-keep"
BOOTSTRAP = "--bootstrap"
GATE_ALL_PAIRS = "--gate-all-pairs"
NOISE_FLOOR = "--noise-floor"
POOLING = "--pooling"
BATCH_SIZE = "--batch-size"
MAX_LENGTH = "--max-length"
DEVICE = "--device"
SEED = "--seed"
CACHE_DIR = "--cache-dir"
NO_CACHE = "--no-cache"
REFRESH = "--refresh"
REPORT_DIR = "--report-dir"
COMPARE_TO = "--compare-to"
TRUST_REMOTE_CODE = "--trust-remote-code"
ALLOW_PICKLE = "--allow-pickle"
ONNX_OUTPUT = "--onnx-output"
GGUF_RUNTIME = "--gguf-runtime"
FINETUNE = "--finetune"
ATTACK_MODEL = "--attack-model"
ATTACK_SIZE = "--attack-size"
ATTACK_TOP_K = "--attack-top-k"
PROMPT_TEMPLATE = "--prompt-template"
VERBALIZER = "--verbalizer"
CHOICE_SCORE = "--choice-score"
TEXT_DATA = "--text-data"
TOKEN_SCORING = "--token-scoring"
N_CTX = "--n-ctx"
EXECUTOR = "--executor"
RAY_ADDRESS = "--ray-address"
RAY_WORKERS = "--ray-workers"

#: the built-in characteristics' threshold flags, named as the rest of the option constants
(
    THRESHOLD_ERRORS,
    THRESHOLD_REPRESENTATION,
    THRESHOLD_DISTRIBUTION,
    THRESHOLD_ATTACK,
    THRESHOLD_SIMILARITY,
    THRESHOLD_TOKEN_TOP,
) = (c.threshold_flag for c in BUILTIN)

TASKS = ("classification", "qa", "causal-lm")
DEVICES = ("auto", "cpu", "cuda", "mps")
POOLINGS = ("auto", "cls", "mean", "last")
CHOICE_SCORES = ("acc", "acc_norm")
#: token distribution: every text scored on its own, or the windows llama.cpp's perplexity tool scores
TOKEN_SCORINGS = ("texts", "llama-cpp")
THRESHOLD_ON_CHOICES = ("raw", "corrected", "ci_lower")
#: where the encodings and attack shards run: this process, or Ray tasks (``pytest-miniature[ray]``)
EXECUTORS = ("inprocess", "ray")
#: neighbour search (miniature.core.neighbours.KNN_INDEXES; not imported: it loads FAISS)
KNN_INDEXES = ("auto", "exact", "ivf", "hnsw")
#: ``auto`` searches exactly up to this many indexed items (miniature.core.neighbours.AUTO_EXACT_MAX)
AUTO_EXACT_MAX = 50_000
#: the data roles precomputed vectors can stand for
VECTOR_ROLES = ("test", "train", "holdout", "challenge")


# -- parsers -------------------------------------------------------------------------------
def choice(*accepted: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = str(value).strip().lower()
        if text not in accepted:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(accepted)}")
        return text

    parse.__name__ = "choice"
    return parse


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise argparse.ArgumentTypeError(f"{number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"{number} is above the maximum {maximum}")
        return number

    parse.__name__ = "integer"
    return parse


def fraction(value: str) -> float:
    """A number in [0, 1] (thresholds on Jaccard figures)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number in [0, 1]") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number} is outside [0, 1]")
    return number


def prompt_template(value: str) -> str:
    """A prompt with a ``{text}`` field (written as two characters ``\\n`` for a newline in an ini file)."""
    template = str(value).replace("\\n", "\n")
    if "{text}" not in template:
        raise argparse.ArgumentTypeError(f"{value!r} has no {{text}} field, where the item's text goes")
    return template


def verbalizer(value: str) -> dict[int, str]:
    """``0=negative,1=positive``: each data label id and the word it is scored as."""
    mapping: dict[int, str] = {}
    for piece in (p.strip() for p in str(value).split(",")):
        label, sep, word = piece.partition("=")
        if not sep or not label.strip().isdigit() or not word.strip():
            raise argparse.ArgumentTypeError(f"{piece!r} in {value!r} is not ID=WORD (e.g. 0=negative,1=positive)")
        if int(label) in mapping:
            raise argparse.ArgumentTypeError(f"label {int(label)} is given twice in {value!r}")
        mapping[int(label)] = word.strip()
    if sorted(mapping) != list(range(len(mapping))):
        raise argparse.ArgumentTypeError(f"{value!r} must name the labels 0..{len(mapping) - 1}, each once")
    return mapping


def named_fraction(value: str) -> tuple[str, float]:
    """``NAME=J``: a characteristic's name and a threshold in [0, 1]."""
    name, sep, number = str(value).partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=J (e.g. data_representation=0.5)")
    return name.strip(), fraction(number)


def named_output(value: str) -> tuple[str, str]:
    """``ROLE=NAME``: the ONNX output that serves a role, for exports not named as optimum names them."""
    role, sep, name = str(value).partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not ROLE=NAME (e.g. last_hidden_state=1234)")
    if role.strip() not in ONNX_ROLES:
        raise argparse.ArgumentTypeError(f"{role.strip()!r} is not one of {', '.join(ONNX_ROLES)}")
    return role.strip(), name.strip()


def named_vectors(value: str) -> tuple[str, str, str]:
    """``NAME[:ROLE]=FILE.npy``: a model, the data role its vectors are of (default test), the file."""
    target, sep, file = str(value).rpartition("=")
    name, _, role = target.rpartition(":")
    if role not in VECTOR_ROLES:
        name, role = target, "test"
    if not sep or not name.strip() or not file.strip().endswith(".npy"):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME[:ROLE]=FILE.npy (e.g. my-int8-model=vectors.npy or my-model:train=train.npy)"
        )
    return name.strip(), role, file.strip()


def open_fraction(value: str) -> float:
    """A number strictly between 0 and 1 (the fraction of held-out items kept as ID)."""
    number = fraction(value)
    if number in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"{number} must be strictly between 0 and 1")
    return number


def non_negative(value: str) -> float:
    """A finite number >= 0 (nan and inf are refused: they would pass or fail everything)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative")
    return number


def percentage_points(value: str) -> float:
    """A finite number of percentage points in [0, 100] (a tolerance on an accuracy drop)."""
    number = non_negative(value)
    if number > 100:
        raise argparse.ArgumentTypeError(f"{number} is above 100 percentage points")
    return number


def int_list(value: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. ``1,5,10,20``."""
    parts = [p for p in str(value).replace(" ", "").split(",") if p]
    try:
        numbers = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of whole numbers") from None
    if not numbers or numbers[0] < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must list whole numbers >= 1")
    return numbers


def text(value: str) -> str:
    stripped = str(value).strip()
    if not stripped:
        raise argparse.ArgumentTypeError("empty value")
    return stripped


def path(value: str) -> Path:
    return Path(text(value)).expanduser()


def label_map(value: str) -> str:
    """``NAME=ID,NAME=ID``, checked now (the text is kept; the gate parses it again)."""
    stripped = text(value)
    from miniature.errors import MiniatureError
    from miniature.core.tasks.classification import parse_label_map

    try:
        parse_label_map(stripped)
    except MiniatureError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return stripped


def boolean(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true/false")


@dataclass(frozen=True)
class Option:
    """One command-line option with its ini twin."""

    flag: str
    help: str
    parse: Callable[[str], Any] = text
    default: Any = None
    multiple: bool = False
    switch: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return "miniature_" + self.flag.lstrip("-").replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


OPTIONS: tuple[Option, ...] = (
    Option(
        REFERENCE,
        "the large model to compare against: an alias (bert-large, ...), a Hugging Face id or a directory",
        metavar="MODEL",
    ),
    Option(
        CANDIDATE,
        "a compressed model to check; repeat for several (candidates are also compared with each other)",
        multiple=True,
        metavar="MODEL",
    ),
    Option(
        REFERENCE_BASE,
        "the reference's checkpoint before fine-tuning (adds the 'before fine-tuning' representation check)",
        metavar="MODEL",
    ),
    Option(
        CANDIDATE_BASE,
        "each candidate's checkpoint before fine-tuning, in --candidate order",
        multiple=True,
        metavar="MODEL",
    ),
    Option(
        TASK,
        "task of the checkpoints: classification, qa (extractive, SQuAD 2.0 rules), or causal-lm "
        "(classification by decoder causal LMs, for checkpoints whose config.json names no causal-LM "
        "architecture; decoders are otherwise told from it by themselves)",
        choice(*TASKS),
        "classification",
    ),
    Option(
        TRAIN_DATA,
        "in-distribution training data (OOD index; fine-tuning); default: the built-in sentiment data",
        metavar="FILE|DATASET",
    ),
    Option(HOLDOUT_DATA, "held-out in-distribution data that sets the OOD threshold", metavar="FILE|DATASET"),
    Option(TEST_DATA, "test data for prediction errors and representation", metavar="FILE|DATASET"),
    Option(
        CHALLENGE_DATA,
        "challenge data checked for out-of-distribution items (the paper: NewsQA)",
        metavar="FILE|DATASET",
    ),
    Option(TEXT_COLUMN, "text column of classification data", text, "text"),
    Option(LABEL_COLUMN, "label column of classification data", text, "label"),
    Option(LABEL_MAP, "map model label names to data labels, e.g. NEGATIVE=0,POSITIVE=1", label_map, metavar="MAP"),
    Option(DATA_LIMIT, "use at most this many items of each data set", integer(1), metavar="N"),
    Option(K, "neighbours K for representation and OOD detection (the paper: 10)", integer(1), 10),
    Option(K_SWEEP, "values of K for the sensitivity figure", int_list, (1, 5, 10, 20, 50, 100), metavar="K,K,..."),
    Option(
        KNN_INDEX,
        f"neighbour search of representation, distribution and mutual kNN: exact, ivf, hnsw (FAISS "
        f"approximate indexes, checked against exact search on a sample) or auto (exact up to "
        f"{AUTO_EXACT_MAX:,} items, ivf above)",
        choice(*KNN_INDEXES),
        "auto",
    ),
    Option(
        VECTORS,
        "precomputed sentence vectors of a model: NAME[:ROLE]=FILE.npy, one row per item of that data "
        f"({', '.join(VECTOR_ROLES)}; default test), used instead of encoding; repeat for several",
        named_vectors,
        multiple=True,
        metavar="NAME[:ROLE]=FILE.npy",
    ),
    # one threshold option per built-in characteristic, from the registry
    *(
        Option(c.threshold_flag, c.threshold_help, fraction, c.default_threshold, metavar="J")
        for c in BUILTIN
        if c.threshold_flag
    ),
    Option(
        THRESHOLDS,
        "threshold of any characteristic, also one a project registers: NAME=J; repeat for several",
        named_fraction,
        multiple=True,
        metavar="NAME=J",
    ),
    Option(
        ATTACK_DROP_TOLERANCE,
        "max extra %% accuracy drop under attack, in percentage points over the reference's",
        percentage_points,
        10.0,
        metavar="PP",
    ),
    Option(
        THRESHOLD_ON,
        "compare thresholds with the raw figure, the chance-corrected one, or the CI's lower bound",
        choice(*THRESHOLD_ON_CHOICES),
        "raw",
    ),
    Option(
        OOD_KEEP, "fraction of held-out in-distribution items the OOD threshold keeps", open_fraction, 0.95, metavar="F"
    ),
    Option(BOOTSTRAP, "bootstrap resamples for confidence intervals (0: none)", integer(0), 1000, metavar="N"),
    Option(
        GATE_ALL_PAIRS,
        "candidate-vs-candidate pairs fail the run too (default: reported only)",
        boolean,
        False,
        switch=True,
    ),
    Option(NOISE_FLOOR, "also compare the reference with a reloaded copy of itself", boolean, False, switch=True),
    Option(
        POOLING,
        "sentence vector: auto (an encoder's [CLS], as the paper; a decoder's last token), cls, mean or last",
        choice(*POOLINGS),
        "auto",
    ),
    Option(
        PROMPT_TEMPLATE,
        "decoder LMs: the prompt an item becomes, with {text} where its text goes",
        prompt_template,
        "{text}\nAnswer:",
        metavar="TEMPLATE",
    ),
    Option(
        VERBALIZER,
        "decoder LMs: the word each label is scored as, e.g. 0=negative,1=positive (default: the data's label names)",
        verbalizer,
        metavar="MAP",
    ),
    Option(
        CHOICE_SCORE,
        "decoder LMs: a choice's score is its log-likelihood (acc) or that per character (acc_norm), as lm-evaluation-harness",
        choice(*CHOICE_SCORES),
        "acc",
    ),
    Option(
        TEXT_DATA,
        "plain text for the token distribution (.txt, or a file with a text column); default: the test texts",
        metavar="FILE|DATASET",
    ),
    Option(
        TOKEN_SCORING,
        "token distribution: score each text on its own (texts), or the windows llama.cpp's perplexity tool scores (llama-cpp)",
        choice(*TOKEN_SCORINGS),
        "texts",
    ),
    Option(
        N_CTX,
        "with --token-scoring llama-cpp: the context window, as llama-perplexity's -c",
        integer(4),
        512,
        metavar="N",
    ),
    Option(BATCH_SIZE, "items per forward pass", integer(1), 32, metavar="N"),
    Option(MAX_LENGTH, "max tokens per item (longer ones are truncated and counted)", integer(8), 128, metavar="N"),
    Option(DEVICE, "auto, cpu, cuda or mps", choice(*DEVICES), "auto"),
    Option(SEED, "seed for sampling, bootstrap and fine-tuning", integer(0, 2**32 - 1), 0, metavar="N"),
    Option(CACHE_DIR, "where model outputs are cached", path, Path(".miniature-cache"), metavar="DIR"),
    Option(NO_CACHE, "compute everything, store nothing", boolean, False, switch=True),
    Option(REFRESH, "recompute and overwrite cached outputs", boolean, False, switch=True),
    Option(REPORT_DIR, "where the summary page and JSON are written", path, Path("reports"), metavar="DIR"),
    Option(
        COMPARE_TO,
        "a previous run's JSON report (e.g. reports/latest.json): the summary shows what changed since",
        path,
        metavar="PREVIOUS.json",
    ),
    Option(TRUST_REMOTE_CODE, "allow code shipped with a model to run (off by default)", boolean, False, switch=True),
    Option(
        ALLOW_PICKLE,
        "allow pickle (*.bin) weights when no safetensors exist (off by default)",
        boolean,
        False,
        switch=True,
    ),
    Option(
        ONNX_OUTPUT,
        "the output of an ONNX export that serves a role, for exports not named as optimum names them: ROLE=NAME (roles: logits, start_logits, end_logits, last_hidden_state); repeat for several",
        named_output,
        multiple=True,
        metavar="ROLE=NAME",
    ),
    Option(
        GGUF_RUNTIME,
        "how a .gguf model runs: llama.cpp (its kernels, through llama-cpp-python) or transformers (its weights dequantized to PyTorch)",
        choice(*GGUF_RUNTIMES),
        "llama.cpp",
    ),
    Option(
        FINETUNE, "fine-tune each model on --train-data first; compare before and after", boolean, False, switch=True
    ),
    Option(
        ATTACK_MODEL,
        "masked LM proposing BERT-Attack substitutions (the paper: bert-base)",
        text,
        "bert-base",
        metavar="MODEL",
    ),
    Option(ATTACK_SIZE, "items attacked per model (the paper: 1000)", integer(1), 200, metavar="N"),
    Option(ATTACK_TOP_K, "BERT-Attack's K: most important words perturbed (the paper: 3)", integer(1), 3, metavar="K"),
    Option(
        EXECUTOR,
        "where encodings and attack shards run: inprocess, or ray (pip install 'pytest-miniature[ray]'; the cache dir must be shared with the workers)",
        choice(*EXECUTORS),
        "inprocess",
    ),
    Option(
        RAY_ADDRESS,
        "with --executor ray: the address of an existing Ray cluster (default: start a local one)",
        text,
        metavar="ADDRESS",
    ),
    Option(
        RAY_WORKERS,
        "with --executor ray: CPUs of the local cluster it starts (default: all cores); on an existing cluster, its own resources",
        integer(1),
        metavar="N",
    ),
    # options a built-in characteristic declares in its registration
    *(
        Option(flag, help_text, choice(*choices), default)
        for c in BUILTIN
        for flag, help_text, choices, default in c.options
    ),
)

#: the options the characteristics declare in their registration (each its own, not the core's):
#: held in :attr:`Settings.declared` and read by flag (``settings["--flag"]``)
DECLARED_FLAGS: frozenset[str] = frozenset(flag for c in BUILTIN for flag, *_ in c.options)

BY_FLAG: dict[str, Option] = {option.flag: option for option in OPTIONS}


def default_text(option: Option) -> str:
    """An option's default as ``pytest --help`` and the options page show it ("" when it has
    none: no value, or a switch that is off); ``0`` is a default too."""
    value = option.default
    if option.switch or value is None or value in ([], ()):
        return ""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


#: options that take a value: written as two words (``--cache-dir DIR``), the value is a
#: free argument when pytest picks its rootdir and ini file, before this plugin loads
VALUE_FLAGS: tuple[str, ...] = tuple(option.flag for option in OPTIONS if not option.switch)

#: options that name a model: resolved at start-up, so a bad one is a usage error
MODEL_FLAGS: tuple[str, ...] = tuple(option.flag for option in OPTIONS if option.metavar == "MODEL")


def attribute(flag: str) -> str:
    """The settings attribute of a flag: ``--attack-size`` -> ``attack_size``."""
    return flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Settings:
    """Resolved option values (command line over ini over default), read once: a frozen
    object with one typed attribute per option of :data:`OPTIONS` (``settings.attack_size``),
    named by :func:`attribute`, with the option's default; an option given several times
    is a tuple; the options a characteristic declares are in :attr:`declared`.
    ``tests/test_settings.py`` holds the fields to :data:`OPTIONS`."""

    reference: str | None = None
    candidate: tuple[str, ...] = ()
    reference_base: str | None = None
    candidate_base: tuple[str, ...] = ()
    task: str = "classification"
    train_data: str | None = None
    holdout_data: str | None = None
    test_data: str | None = None
    challenge_data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_map: str | None = None
    data_limit: int | None = None
    k: int = 10
    k_sweep: tuple[int, ...] = (1, 5, 10, 20, 50, 100)
    knn_index: str = "auto"
    vectors: tuple[tuple[str, str, str], ...] = ()
    # the built-in characteristics' thresholds (their defaults are the registry's)
    threshold_errors: float | None = 0.5
    threshold_representation: float | None = 0.5
    threshold_distribution: float | None = 0.5
    threshold_attack: float | None = 0.5
    threshold_similarity: float | None = 0.9
    threshold_token_top: float | None = 0.9
    threshold: tuple[tuple[str, float], ...] = ()
    attack_drop_tolerance: float = 10.0
    threshold_on: str = "raw"
    ood_keep: float = 0.95
    bootstrap: int = 1000
    gate_all_pairs: bool = False
    noise_floor: bool = False
    pooling: str = "auto"
    prompt_template: str = "{text}\nAnswer:"
    verbalizer: dict[int, str] | None = None
    choice_score: str = "acc"
    text_data: str | None = None
    token_scoring: str = "texts"
    n_ctx: int = 512
    batch_size: int = 32
    max_length: int = 128
    device: str = "auto"
    seed: int = 0
    cache_dir: Path = Path(".miniature-cache")
    no_cache: bool = False
    refresh: bool = False
    report_dir: Path = Path("reports")
    compare_to: Path | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    onnx_output: tuple[tuple[str, str], ...] = ()
    gguf_runtime: str = "llama.cpp"
    finetune: bool = False
    attack_model: str = "bert-base"
    attack_size: int = 200
    attack_top_k: int = 3
    executor: str = "inprocess"
    ray_address: str | None = None
    ray_workers: int | None = None
    #: the options characteristics declare in their registration, as (flag, value) pairs (read by
    #: flag: ``settings["--flag"]``; one not given has its option's default)
    declared: tuple[tuple[str, Any], ...] = ()

    @property
    def data_task(self) -> str:
        """The task the data is read for: ``--task causal-lm`` is classification by decoders."""
        return "classification" if self.task == "causal-lm" else self.task

    @property
    def decoders(self) -> bool | None:
        """True where ``--task causal-lm`` reads every model as a causal LM; None: told from
        each model's config.json."""
        return True if self.task == "causal-lm" else None

    @classmethod
    def from_flags(cls, values: dict[str, Any]) -> "Settings":
        own: dict[str, Any] = {
            attribute(flag): (tuple(value) if isinstance(value, list) else value)
            for flag, value in values.items()
            if flag not in DECLARED_FLAGS
        }
        declared = tuple((flag, value) for flag, value in values.items() if flag in DECLARED_FLAGS)
        return cls(**own, declared=declared)

    def __getitem__(self, flag: str) -> Any:
        if flag in DECLARED_FLAGS:
            return dict(self.declared).get(flag, BY_FLAG[flag].default)
        value = getattr(self, attribute(flag))
        return list(value) if BY_FLAG[flag].multiple else value

    @property
    def values(self) -> dict[str, Any]:
        """Every option by flag (the JSON report's settings)."""
        return {o.flag: self[o.flag] for o in OPTIONS}

    @property
    def candidates(self) -> list[str]:
        return list(self.candidate or [])

    @property
    def onnx_outputs(self) -> dict[str, str]:
        """``--onnx-output ROLE=NAME`` values by role."""
        return dict(self.onnx_output or ())

    @property
    def vector_files(self) -> dict[tuple[str, str], str]:
        """``--vectors NAME[:ROLE]=FILE.npy`` files by (model, role)."""
        return {(name, role): file for name, role, file in self.vectors or ()}

    @property
    def thresholds(self) -> dict[str, float]:
        """``--threshold NAME=J`` values by characteristic name."""
        return dict(self.threshold or ())


def check_combinations(values: dict[str, Any]) -> None:
    """Refuse option values that parse alone but make no sense together (one line, with
    the fix). ``values`` is keyed by flag, as in :class:`Settings`; raises ``ValueError``."""
    if values.get(THRESHOLD_ON) == "ci_lower" and values.get(BOOTSTRAP) == 0:
        raise ValueError(
            f"{THRESHOLD_ON} ci_lower with {BOOTSTRAP} 0 (miniature_threshold_on / miniature_bootstrap): "
            "no bootstrap means no confidence interval, so every check would fail; fix: set "
            f"{BOOTSTRAP} N (e.g. 1000) or {THRESHOLD_ON} raw"
        )
    if values.get(EXECUTOR) == "ray" and values.get(NO_CACHE):
        raise ValueError(
            f"{EXECUTOR} ray with {NO_CACHE} (miniature_executor / miniature_no_cache): the Ray workers "
            f"hand their outputs over through the cache; fix: drop {NO_CACHE} (pass {REFRESH} to "
            f"recompute) or use {EXECUTOR} inprocess"
        )
    for flag in (RAY_ADDRESS, RAY_WORKERS):
        if values.get(flag) is not None and values.get(EXECUTOR) != "ray":
            raise ValueError(
                f"{flag} without {EXECUTOR} ray: it would be ignored; fix: add {EXECUTOR} ray or drop {flag}"
            )
    if values.get(RAY_ADDRESS) is not None and values.get(RAY_WORKERS) is not None:
        raise ValueError(
            f"{RAY_WORKERS} with {RAY_ADDRESS}: an existing cluster runs as many tasks "
            f"as its resources allow; fix: drop {RAY_WORKERS} (it sizes a local cluster)"
        )
    reference_base = values.get(REFERENCE_BASE)
    candidate_bases = list(values.get(CANDIDATE_BASE) or [])
    if reference_base or candidate_bases:
        candidates = list(values.get(CANDIDATE) or [])
        if not reference_base or len(candidate_bases) != len(candidates):
            raise ValueError(
                f"{REFERENCE_BASE} {'given' if reference_base else 'missing'} and {len(candidate_bases)} "
                f"{CANDIDATE_BASE} for {len(candidates)} {CANDIDATE}: the 'before fine-tuning' check "
                f"needs the base checkpoint of every model, so it would be skipped; fix: pass "
                f"{REFERENCE_BASE} once and {CANDIDATE_BASE} once per {CANDIDATE}, in the same order "
                "(or neither)"
            )


def resolve(option: Option, cli_value: Any, ini_value: Any) -> Any:
    """Command line over ini over default; ini strings go through the same parser."""
    if option.switch and cli_value:
        return True
    if not option.switch and cli_value not in (None, []):
        return cli_value
    if ini_value not in (None, "", []):
        try:
            if option.multiple:
                items = ini_value if isinstance(ini_value, list) else str(ini_value).split()
                return [option.parse(item) for item in items]
            return option.parse(ini_value)
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"ini option {option.ini} = {ini_value!r}: {error}") from None
    return [] if option.multiple else option.default


#: the built-in characteristics' names by their threshold flag (``--threshold-errors`` -> ``prediction_errors``)
THRESHOLD_NAMES: dict[str, str] = {c.threshold_flag: c.name for c in BUILTIN if c.threshold_flag}


def resolve_thresholds(cli: dict[str, Any], ini: dict[str, Any]) -> dict[str, Any]:
    """Every threshold, command line over ini over default, however each is written
    (``--threshold-representation J`` or ``--threshold data_representation=J``): an ini's
    ``miniature_threshold`` list never beats a command-line flag, nor drops the ini's
    other thresholds. ``cli`` holds parsed values by flag, ``ini`` the ini strings; both
    hold the per-characteristic flags and ``--threshold``. One threshold given twice in
    one place is refused (which value was meant?). Returns those flags' resolved values;
    ``--threshold`` keeps only the names without a flag of their own."""
    given: dict[str, float] = {}
    for where, source in (("ini", ini), ("command line", cli)):
        entries: list[tuple[str, str, float]] = []  # (how it was written, name, value)
        for flag, name in THRESHOLD_NAMES.items():
            value = source.get(flag)
            if value in (None, ""):
                continue
            if where == "ini":
                value = resolve(BY_FLAG[flag], None, value)
            entries.append((f"{BY_FLAG[flag].ini} = {value}" if where == "ini" else f"{flag} {value}", name, value))
        named = source.get(THRESHOLDS)
        if named not in (None, "", []):
            if where == "ini":
                named = resolve(BY_FLAG[THRESHOLDS], None, named)
            prefix = f"{BY_FLAG[THRESHOLDS].ini} = " if where == "ini" else f"{THRESHOLDS} "
            entries += [(f"{prefix}{name}={value}", name, value) for name, value in named]
        found: dict[str, str] = {}
        for written, name, value in entries:
            if name in found:
                raise ValueError(
                    f"{found[name]} and {written} on the {where}: two values for the {name} "
                    f"threshold; fix: give it once"
                )
            found[name] = written
            given[name] = value  # the command line comes second: it wins
    values: dict[str, Any] = {flag: given.pop(name, BY_FLAG[flag].default) for flag, name in THRESHOLD_NAMES.items()}
    values[THRESHOLDS] = list(given.items())
    return values


def make_settings(**overrides: Any) -> Settings:
    """Settings with defaults, overridden by keyword (``reference="x"``, ``k=5``, ...).

    For using the engine from Python (the CLI, notebooks, tests) without pytest.
    """
    values = {option.flag: ([] if option.multiple else option.default) for option in OPTIONS}
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if flag not in BY_FLAG:
            raise TypeError(
                f"unknown setting {name!r}; known: {', '.join(o.flag.lstrip('-').replace('-', '_') for o in OPTIONS)}"
            )
        values[flag] = value
    return Settings.from_flags(values)
