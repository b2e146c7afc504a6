"""Tiny offline decoder LMs for tests: a word-level tokenizer built from the project's own
text (deterministic: words by count, ties alphabetical) and randomly initialised Llama and
GPT-2 causal LMs, saved with ``save_pretrained`` (safetensors) so loading is exercised for
real, with no hub."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

from miniature.core.builtin_data import sentiment_reviews

#: name -> (architecture, layers, hidden size, heads, init seed)
TINY_DECODERS: dict[str, tuple[str, int, int, int, int]] = {
    "llama": ("llama", 2, 64, 4, 0),
    "gpt2": ("gpt2", 2, 64, 4, 1),
}
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


def decoder_tokenizer(directory: Path, *, vocab_size: int = 400) -> Any:
    """A whitespace/punctuation word-level fast tokenizer with pad, unk, BOS and EOS, saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    corpus = [r.text for r in sentiment_reviews(600, seed=11)]
    counts = collections.Counter(w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text))
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    words += ["Answer", "Review", "Sentiment", "positive", "negative", ":"]
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word in words:
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_decoders(root: Path) -> dict[str, Path]:
    """Each of :data:`TINY_DECODERS` saved under ``root/NAME`` with the shared tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = decoder_tokenizer(root / "tokenizer")
    vocab = len(tokenizer)
    paths = {}
    for name, (architecture, layers, hidden, heads, seed) in TINY_DECODERS.items():
        torch.manual_seed(seed)
        if architecture == "llama":
            config = LlamaConfig(
                vocab_size=vocab,
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=heads // 2,
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            model: Any = LlamaForCausalLM(config)
        else:
            gpt2_config = GPT2Config(
                vocab_size=vocab,
                n_embd=hidden,
                n_layer=layers,
                n_head=heads,
                n_positions=256,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            model = GPT2LMHeadModel(gpt2_config)
        path = root / name
        model.eval().save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


def sentencepiece_tokenizer(directory: Path, *, vocab_size: int = 512) -> Any:
    """A SentencePiece BPE tokenizer trained on the built-in reviews (unk 0, BOS 1, EOS 2, as
    Llama's), saved as a ``LlamaTokenizer``: llama.cpp's converter reads ``tokenizer.model``
    (it cannot convert a word-level tokenizer). Deterministic (one thread)."""
    import tempfile

    from miniature.tools.demo_decoder import train_sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    texts = [r.text for r in sentiment_reviews(600, seed=11)] + ["Review: Sentiment: Answer: positive negative"]
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_sentencepiece(texts, Path(scratch), {"vocab_size": vocab_size, "model_type": "bpe"})
        tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_sentencepiece_llama(directory: Path, *, seed: int = 0) -> Path:
    """A tiny random Llama with a SentencePiece tokenizer, saved under ``directory``: the
    smallest checkpoint llama.cpp's ``convert_hf_to_gguf.py`` converts (for the GGUF tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = sentencepiece_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).eval().save_pretrained(directory, safe_serialization=True)
    return directory


#: llama.cpp's vocab-only GGUF of GPT-2's tokenizer (with ``.inp``/``.out`` test cases), in its ``models/``
GPT2_VOCAB = "ggml-vocab-gpt-2.gguf"


def gpt2_vocab_file(llama_cpp: str | Path | None = None) -> Path:
    """llama.cpp's ``models/ggml-vocab-gpt-2.gguf`` beside the converter of ``llama_cpp``
    (else ``$MINIATURE_LLAMA_CPP``): GPT-2's real vocabulary and merges, offline."""
    from miniature.tools.gguf_export import GgufExportError, converter_path

    file = converter_path(llama_cpp).parent / "models" / GPT2_VOCAB
    if not file.is_file():
        raise GgufExportError(f"{str(file.parent)!r} holds no {GPT2_VOCAB}; fix: name a llama.cpp source folder")
    return file


def vocab_test_cases(vocab_file: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's expected tokenizations of a vocab GGUF (``FILE.inp``: texts separated by
    ``__ggml_vocab_test__`` lines; ``FILE.out``: one line of token ids each), read as its
    test-tokenizer-0 reads them."""
    texts = Path(f"{vocab_file}.inp").read_text("utf-8").split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()  # the file ends with a separator
    ids = [[int(i) for i in line.split()] for line in Path(f"{vocab_file}.out").read_text("utf-8").splitlines()]
    if len(texts) != len(ids):
        raise ValueError(f"{vocab_file}: {len(texts)} test texts but {len(ids)} tokenizations")
    return list(zip(texts, ids))


def gpt2_tokenizer(directory: Path, llama_cpp: str | Path | None = None) -> Any:
    """GPT-2's byte-level BPE tokenizer (50257 tokens, ``<|endoftext|>`` as BOS, EOS and
    unk), rebuilt from llama.cpp's vocab GGUF as ``vocab.json`` + ``merges.txt`` and saved
    under ``directory`` as a ``GPT2TokenizerFast``: the tokenizer llama.cpp's converter
    recognises as ``gpt-2``, with no hub."""
    import json

    from transformers import GPT2TokenizerFast

    from miniature.core.gguf_model import gguf_reader, metadata_value

    reader = gguf_reader(gpt2_vocab_file(llama_cpp))
    tokens = [str(t) for t in metadata_value(reader, "tokenizer.ggml.tokens")]
    merges = [str(m) for m in metadata_value(reader, "tokenizer.ggml.merges")]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), "utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    tokenizer = GPT2TokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_gpt2(
    directory: Path, *, tokenizer: Any = None, seed: int = 0, llama_cpp: str | Path | None = None
) -> Path:
    """A tiny random GPT-2 (2 layers, width 32, tied head) with GPT-2's real tokenizer (or
    ``tokenizer``), saved under ``directory`` as safetensors: the smallest checkpoint
    llama.cpp's converter reads as GPT-2 with a BPE tokenizer (for the GGUF tests)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if tokenizer is None:
        tokenizer = gpt2_tokenizer(directory, llama_cpp)
    else:
        tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(directory, safe_serialization=True)
    return directory
