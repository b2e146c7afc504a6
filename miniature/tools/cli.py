"""The ``miniature`` command line: one function per subcommand, kept in a registry.

To add a subcommand, write ``def _my_arguments(parser)`` that declares its options and
decorate its handler::

    @command("demo", help="...", arguments=_demo_arguments)
    def demo_command(args: argparse.Namespace) -> int: ...

Errors of type :class:`~miniature.errors.MiniatureError` (bad input, with the fix) are
printed as one line ``miniature: error: ...`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from miniature.errors import MiniatureError

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, option declarations and handler."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler


#: Subcommands by name, in the order they were registered (the order ``--help`` lists).
COMMANDS: dict[str, Command] = {}


def command(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of subcommand ``name``."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, arguments, handler)
        return handler

    return register


def default_output_dir() -> Path:
    """Where fine-tuned models go unless ``--output-dir``: $MINIATURE_CACHE_DIR/finetuned
    (default ~/.cache/miniature/finetuned)."""
    root = os.environ.get("MINIATURE_CACHE_DIR") or os.path.join("~", ".cache", "miniature")
    return Path(root).expanduser() / "finetuned"


# -- finetune ---------------------------------------------------------------------------------
def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="alias, Hugging Face id or local model directory")
    parser.add_argument(
        "--task",
        choices=("classification", "qa"),
        default="classification",
        help="classification (text + label columns) or qa (SQuAD rows: id, "
        "question, context, answers); default: %(default)s",
    )
    parser.add_argument(
        "--train",
        required=True,
        metavar="FILE",
        help="training data: a jsonl/json/csv/parquet file or a `datasets` name such as 'imdb:train'",
    )
    parser.add_argument("--text-column", default="text", help="default: %(default)s")
    parser.add_argument("--label-column", default="label", help="default: %(default)s")
    parser.add_argument("--epochs", type=float, default=3.0, help="default: %(default)s")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs); default: off"
    )
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens per item (per window for qa); default: %(default)s"
    )
    parser.add_argument(
        "--doc-stride",
        type=int,
        default=64,
        help="qa: tokens shared by consecutive windows over a long context; default: %(default)s",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="folder of fine-tuned models (one sub-folder per fingerprint); "
        "default: $MINIATURE_CACHE_DIR/finetuned or ~/.cache/miniature/finetuned",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@command(
    "finetune", help="fine-tune a model on a task and print the folder of the result", arguments=_finetune_arguments
)
def finetune_command(args: argparse.Namespace) -> int:
    """Fine-tune (or reuse a stored fine-tuned copy) and print its folder on stdout."""
    from miniature.core.data import load_records, load_text_data
    from miniature.core.finetune import finetune
    from miniature.core.tasks.qa import qa_examples_from_records

    train: object
    if args.task == "qa":
        train = qa_examples_from_records(load_records(args.train, split="train"), str(args.train))
    else:
        train = load_text_data(args.train, text_column=args.text_column, label_column=args.label_column, split="train")
    path = finetune(
        args.model,
        args.task,
        train,
        output_root=args.output_dir or default_output_dir(),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        seed=args.seed,
        max_length=args.max_length,
        doc_stride=args.doc_stride,
        progress=not args.no_progress,
    )
    print(path)
    return 0


# -- compress ---------------------------------------------------------------------------------
def _layer_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of layer indices such as 1,3,5"
        ) from None


def _compress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the reference: a local model directory (or alias of a packaged model)")
    parser.add_argument(
        "--method",
        default=None,
        choices=("int8", "prune", "layers", "none"),
        help="int8: quantization of the Linear layers with torchao (see "
        "--quantization); prune: L1 magnitude pruning of the encoder's Linear "
        "weights; layers: keep a subset of the encoder layers; none: no "
        "compression (with --format onnx: export the model as it is); required "
        "unless --format gguf",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="folder of the compressed model (created)")
    parser.add_argument(
        "--sparsity",
        type=float,
        default=0.5,
        help="prune: fraction of weights set to zero, in [0, 1); default: %(default)s",
    )
    parser.add_argument(
        "--prune-scope",
        choices=("global", "layer"),
        default="global",
        help="prune: rank all encoder weights together, or each matrix on its own; default: %(default)s",
    )
    parser.add_argument(
        "--keep-layers",
        type=_layer_list,
        default=None,
        metavar="I,J,...",
        help="layers: 0-based encoder layers to keep; default: every other layer from the first (0,2,4 of 6)",
    )
    parser.add_argument(
        "--qscheme",
        choices=("per-channel", "per-tensor"),
        default="per-channel",
        help="int8: one scale per output row, or one per matrix; default: %(default)s",
    )
    from miniature.core.formats import QUANTIZATIONS
    from miniature.tools.gguf_export import ENVIRONMENT, GGUF_QUANTIZATIONS

    parser.add_argument(
        "--quantization",
        choices=(*QUANTIZATIONS, *GGUF_QUANTIZATIONS),
        default=None,
        help="int8: int8 weights with int8 activations quantized at run time, int8 "
        "weights only, or int4 weights only (torchao; default int8-dynamic); --format gguf: "
        "llama.cpp's type (default q8_0; f16 for none)",
    )
    parser.add_argument(
        "--format",
        choices=("pytorch", "onnx", "gguf"),
        default="pytorch",
        dest="output_format",
        help="pytorch: a folder the PyTorch loader reads; onnx: model.onnx run by "
        "onnxruntime (int8: onnxruntime's dynamic int8), the file you ship; gguf: a decoder "
        "converted and quantized by llama.cpp (model-QUANT.gguf); default: %(default)s",
    )
    parser.add_argument(
        "--llama-cpp",
        default=None,
        metavar="DIR",
        help=f"--format gguf: the llama.cpp source folder whose convert_hf_to_gguf.py converts "
        f"(or the llama-cpp-python sdist); default: ${ENVIRONMENT}",
    )
    parser.add_argument(
        "--onnx-int8",
        action="store_true",
        help="--format onnx: int8-quantize the export with onnxruntime (quantize_dynamic); implied by --method int8",
    )
    parser.add_argument(
        "--distil",
        action="store_true",
        help="layers: re-train the smaller classifier or causal LM after dropping layers, by "
        "distillation from the reference's outputs (label or next-token distributions) on --distil-data",
    )
    parser.add_argument(
        "--distil-data",
        default=None,
        metavar="FILE|DATASET",
        help="--distil: texts to distil on (column --text-column; no labels "
        "needed); default: the built-in sentiment training texts",
    )
    parser.add_argument("--text-column", default="text", help="--distil-data: the text column; default: %(default)s")
    parser.add_argument(
        "--distil-epochs", type=float, default=None, metavar="E", help="--distil: epochs over the texts; default: 3"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier `miniature compress` output in --output-dir "
        "(never other files, never a folder holding the model)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@command(
    "compress",
    help="compress a model (int8, pruning, fewer layers) and print the folder of the result",
    arguments=_compress_arguments,
)
def compress_command(args: argparse.Namespace) -> int:
    """Compress (or reuse an identical earlier compression) and print its folder on stdout."""
    from miniature.tools.compress import DISTIL_EPOCHS, compress

    distil_texts = None
    if args.distil_data is not None:
        from miniature.core.data import load_text_data

        distil_texts = load_text_data(args.distil_data, text_column=args.text_column, label_column=None).texts
    path = compress(
        args.model,
        args.output_dir,
        method=args.method,
        sparsity=args.sparsity,
        prune_scope=args.prune_scope,
        keep_layers=args.keep_layers,
        qscheme=args.qscheme,
        quantization=args.quantization,
        output_format=args.output_format,
        onnx_int8=args.onnx_int8,
        llama_cpp=args.llama_cpp,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        distil=args.distil,
        distil_texts=distil_texts,
        distil_epochs=args.distil_epochs or DISTIL_EPOCHS,
    )
    print(path)
    return 0


# -- demo -------------------------------------------------------------------------------------
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from miniature.tools.demo import CANDIDATES, DEFAULT_CANDIDATES, SIZES

    parser.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="size",
        default=None,
        help=f"the small size: {SIZES['quick'].data_limit} items per data "
        f"set, {SIZES['quick'].attack_size} attacked items (the decoder demo's default)",
    )
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        dest="size",
        help=f"full (the whole built-in data, {SIZES['full'].attack_size} attacked items; the default, "
        "except with --decoder) or quick",
    )
    from miniature.tools import demo_decoder

    parser.add_argument(
        "--decoder",
        action="store_true",
        help="the decoder demo: the demo's own small Llama, trained on the built-in reviews, vs its "
        "torchao int8 and int4, GGUF Q8_0 and Q4_K_M (with llama-cpp-python) and distilled copies",
    )
    parser.add_argument(
        "--candidates",
        default=None,
        help=f"comma-separated, from {', '.join(CANDIDATES)} ('reference': the "
        f"reference against itself; with --decoder from {', '.join(demo_decoder.CANDIDATES)}); "
        f"default: all ({','.join(DEFAULT_CANDIDATES)})",
    )
    parser.add_argument(
        "--attack-size", type=int, default=None, metavar="N", help="items attacked per model (overrides the size's)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where models and outputs are kept; default: $MINIATURE_CACHE_DIR or ~/.cache/miniature",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where latest.json (and report.html) go; default: reports/demo (--decoder: reports/demo-decoder)",
    )
    parser.add_argument("--no-html", action="store_true", help="skip the HTML report")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when any candidate fails a check, as a CI gate does"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: one per core); 1 is faster on cores shared with other jobs",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress output")


@command(
    "demo",
    help="run the offline demo gate: fine-tuned all-MiniLM-L6-v2 vs its int8, "
    "pruned and distilled 3-layer compressions (--decoder: a small Llama vs its quantized and distilled copies)",
    arguments=_demo_arguments,
)
def demo_command(args: argparse.Namespace) -> int:
    """Run the demo. Exit 0 when the gate ran and the reference matched itself; the
    candidates' verdicts are the demo's output (``--strict``: exit 1 if any fails)."""
    from miniature.tools import demo_decoder
    from miniature.tools.demo import DEFAULT_CANDIDATES, demo, result_passed

    run = demo_decoder.decoder_demo if args.decoder else demo
    if args.candidates is None:
        candidates = list(demo_decoder.DEFAULT_CANDIDATES if args.decoder else DEFAULT_CANDIDATES)
    else:
        candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    report_dir = args.report_dir or Path("reports") / ("demo-decoder" if args.decoder else "demo")
    result = run(
        size=args.size or ("quick" if args.decoder else "full"),
        cache_dir=args.cache_dir,
        report_dir=report_dir,
        candidates=candidates,
        attack_size=args.attack_size,
        html=not args.no_html,
        progress=not args.no_progress,
        threads=args.threads,
    )
    if result.exit_code not in (0, 1) or result.report_json is None:
        return result.exit_code or 1  # pytest could not run the gate (usage, internal error)
    if result.self_check_passed() is False:
        print(
            "miniature demo: the reference failed a check against itself; the pipeline is "
            "not sound on this machine (see the report)",
            file=sys.stderr,
        )
        return 1
    if result.exit_code == 1:
        failed = sorted({r["candidate"] for r in result.figures() if r["gating"] and not result_passed(r)})
        print(
            f"miniature demo: {', '.join(failed)} failed some checks: that is the gate's "
            "verdict on them (a real gate exits 1; --strict does here)",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    return 0


# -- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    from miniature import __version__

    parser = argparse.ArgumentParser(
        prog="miniature", description="Check whether a compressed model still behaves like the large model it replaces."
    )
    parser.add_argument("--version", action="version", version=f"miniature {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMANDS.values():
        sub = subparsers.add_parser(entry.name, help=entry.help, description=entry.help)
        entry.arguments(sub)
        sub.set_defaults(handler=entry.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (0 ok, 2 bad input or usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help, --version or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except MiniatureError as error:
        message = " ".join(str(error).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
