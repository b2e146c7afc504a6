"""Decoder checkpoints quantized by transformers (TorchAoConfig), as a team saves them, gated
by miniature: the int8 and int4 weight-only schemes that run on a CPU load and are compared
with their base; the int4 scheme whose kernels need a GPU is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torchao = pytest.importorskip("torchao", reason="needs torchao: pip install 'pytest-miniature[quantize]'")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from miniature.tools.testing_decoder import make_tiny_decoders

    return make_tiny_decoders(tmp_path_factory.mktemp("decoders"))["llama"]


def save_quantized(base: Path, folder: Path, config) -> Path:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(base), device_map="cpu", quantization_config=transformers.TorchAoConfig(config)
    )
    model.save_pretrained(str(folder), safe_serialization=False)  # transformers writes these as pickle only
    transformers.AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("scheme", ["int8 weight-only", "int4 weight-only (intx)"])
def test_a_decoder_quantized_by_transformers_is_gated_against_its_base(
    llama: Path, tmp_path: Path, scheme: str
) -> None:
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig

    from miniature.core.formats import quantization_of
    from miniature.core.gate import Gate
    from miniature.core.models import load_model
    from miniature.core.registry import BUILTIN, Registry
    from miniature.core.settings import make_settings
    from miniature.errors import ModelReferenceError

    config = Int8WeightOnlyConfig() if scheme.startswith("int8") else IntxWeightOnlyConfig(weight_dtype=torch.int4)
    folder = save_quantized(llama, tmp_path / "quantized", config)
    with pytest.raises(ModelReferenceError, match="only pickle weights.*--allow-pickle"):
        load_model(str(folder), head="classification")
    wrapper = load_model(str(folder), head="classification", allow_pickle=True, choices=["negative", "positive"])
    assert wrapper.decoder and wrapper.logits(["a fine film"]).shape == (1, 2)
    assert "transformers quantization_config" in quantization_of(folder)

    gate = Gate(
        make_settings(
            reference=str(llama),
            candidate=[str(folder)],
            allow_pickle=True,
            data_limit=40,
            bootstrap=0,
            cache_dir=tmp_path / "cache",
        ),
        registry=Registry(BUILTIN),
    )
    pair = gate.pairs()[0]
    tokens = gate.outcome("token_distribution", pair)
    errors = gate.outcome("prediction_errors", pair)
    assert tokens.status == "computed" and errors.status in ("computed", "skipped"), (tokens.reason, errors.reason)
    assert 0 < tokens.details["mean_kld"] and tokens.figure > 0.5  # quantized: close to its base, not equal
    assert np.isfinite(tokens.details["ln_ppl_ratio"])


def test_the_gpu_only_int4_scheme_is_refused_in_one_line(llama: Path, tmp_path: Path) -> None:
    import json

    from miniature.core.models import load_model
    from miniature.errors import ModelReferenceError

    folder = tmp_path / "gpu-int4"
    folder.mkdir()
    for file in llama.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "torchao",
        "quant_type": {"default": {"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 128}}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelReferenceError) as error:
        load_model(str(folder), head="classification")
    message = str(error.value)
    assert "\n" not in message and "gpu-int4" in message and "GPU" in message and "fix:" in message
