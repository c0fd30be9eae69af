"""Frontend inputs: zoo specs, local Hugging Face folders, ONNX files that already hold Attention."""

from __future__ import annotations

import pytest

from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import ModelInputError
from edgeattn.compiler.frontend import load_source
from edgeattn.models import zoo


def test_zoo_spec_parsing():
    assert zoo.parse_spec("deit-small") == ("deit-small", None)
    assert zoo.parse_spec("deit-small@384") == ("deit-small", 384)
    with pytest.raises(zoo.UnknownModelError, match="choose one of"):
        zoo.parse_spec("resnet50")
    with pytest.raises(zoo.UnknownModelError, match="positive integer"):
        zoo.parse_spec("deit-small@big")


def test_bad_resolution_is_a_clear_error():
    with pytest.raises(ModelInputError, match="multiple of the patch size"):
        load_source("vit-tiny@100")


def _save_tiny_bert(folder):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=120)
    BertModel(cfg).save_pretrained(folder)


def test_hf_folder_compiles(tmp_path):
    _save_tiny_bert(tmp_path / "bert")
    m = compile_model(str(tmp_path / "bert"), "ort", tmp_path / "art")
    assert m["source"] == "hf-folder" and m["weights"].startswith("from")
    assert m["attention"]["sites"] == 2 and m["attention"]["canonicalized"] == 2
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]


def test_hf_folder_with_a_task_head_ships_its_logits(tmp_path):
    """A fine-tuned classifier folder exports with its head (not the bare backbone), so its
    class-token readout lets readout-prune narrow the last block."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=120,
                     num_labels=3)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "cls")
    m = compile_model(str(tmp_path / "cls"), "ort", tmp_path / "art")
    assert m["description"].startswith("BertForSequenceClassification")
    assert m["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}]
    readout = next(p for p in m["passes"] if p["name"] == "readout-prune")["details"]
    assert readout["attention_sites"] == 1 and readout["tokens_read"] == [1]
    assert m["accuracy"]["max_abs_error"] <= 1e-4


def test_hf_folder_question_answering_head_has_two_outputs(tmp_path):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=120)
    BertForQuestionAnswering(cfg).save_pretrained(tmp_path / "qa")
    src = load_source(f"{tmp_path / 'qa'}@32")
    assert [v.name for v in src.model.graph.outputs] == ["start_logits", "end_logits"]
    assert [list(v.shape) for v in src.model.graph.outputs] == [["batch", 32], ["batch", 32]]


def test_hf_folder_whose_sdpa_does_not_export(tmp_path):
    """BEiT's SDPA path fails torch.onnx.export (a view of SDPA's output strides, torch 2.13); the
    folder is rebuilt with eager attention, whose relative-position bias becomes the mask input."""
    from transformers import BeitConfig

    BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
               patch_size=8, use_relative_position_bias=True).save_pretrained(tmp_path / "beit")
    m = compile_model(str(tmp_path / "beit"), "ort", tmp_path / "art")
    assert m["weights"].startswith("random init")
    assert m["attention"]["sites"] == 2 and m["attention"]["canonicalized"] == 2
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    if "attn_implementation" in m:  # absent once torch exports BEiT's SDPA path
        assert m["attn_implementation"].startswith("eager (the default attention did not export")


def test_hf_folder_at_another_sequence_length(tmp_path):
    _save_tiny_bert(tmp_path / "bert")  # 512 positions
    src = load_source(f"{tmp_path / 'bert'}@48")
    assert [list(v.shape) for v in src.model.graph.inputs] == [["batch", 48], ["batch", 48]]
    with pytest.raises(ModelInputError, match="longer than the model's 512 positions"):
        load_source(f"{tmp_path / 'bert'}@1024")
    with pytest.raises(ModelInputError, match="positive integer"):
        load_source(f"{tmp_path / 'bert'}@long")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelInputError, match="without config.json"):
        load_source(str(tmp_path / "empty"))


def test_onnx_with_attention_already(tmp_path):
    """A dynamo export at opset 23 writes Attention itself: counted as already canonical."""
    import torch
    import onnx_ir as ir

    class Block(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    x = torch.randn(1, 2, 6, 4)
    prog = torch.onnx.export(Block(), (x, x, x), dynamo=True, opset_version=23, verbose=False)
    path = tmp_path / "sdpa23.onnx"
    ir.save(prog.model, path)
    m = compile_model(str(path), "ort", tmp_path / "art")
    att = m["attention"]
    assert att["sites"] == 1 and att["already_canonical"] == 1 and att["canonicalized"] == 0
    assert m["accuracy"]["max_abs_error"] <= 1e-6
