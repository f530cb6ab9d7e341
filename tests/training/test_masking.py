"""Loss masks on real tokenized examples (SmolLM2-135M's tokenizer): which blocks are trained, which masked."""

from __future__ import annotations

import copy

import pytest
from mathagent.training import export, masking

pytestmark = pytest.mark.model


def _split(enc, tok):
    """Decode the trained tokens and the masked tokens, each run by run."""
    runs: list[tuple[bool, list[int]]] = []
    for i, label in zip(enc["input_ids"], enc["labels"], strict=True):
        trained = label != masking.IGNORE
        if trained:
            assert label == i
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(i)
        else:
            runs.append((trained, [i]))
    trained = [tok.decode(ids) for t, ids in runs if t]
    masked = [tok.decode(ids) for t, ids in runs if not t]
    return trained, masked


@pytest.fixture()
def mc_tok(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    assert masking.add_mathcoder_tokens(tok) == 8
    return tok


def test_mathcoder_tokens_are_single_special_tokens(mc_tok):
    for t in ("<|text|>", "<|code|>", "<|execution|>", "<|endofblock|>", "<|endofmessage|>"):
        assert len(mc_tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert masking.add_mathcoder_tokens(mc_tok) == 0


def test_mathcoder_mask_on_real_tokens(mc_tok, traces):
    text = export.render_mathcoder(traces[0], system="SYS")
    enc = masking.tokenize_mathcoder(text, mc_tok)
    assert mc_tok.decode(enc["input_ids"]) == text
    assert enc["input_ids"] == mc_tok(text, add_special_tokens=False)["input_ids"]
    trained, masked = _split(enc, mc_tok)
    assert trained == [
        "<|text|>Let me compute it with Python.<|endofblock|><|code|>print(2 + 3)<|endofblock|>",
        "<|text|>The answer is \\boxed{5}.<|endofblock|><|endofmessage|>",
    ]
    assert masked == [
        "<|system|><|text|>SYS<|endofblock|><|endofmessage|><|user|><|text|>What is 2 + 3?<|endofblock|>"
        "<|endofmessage|><|assistant|>",
        "<|execution|>5<|endofblock|>",
    ]


def test_chat_mask_on_real_tokens(smol_tokenizer, traces):
    tok = copy.deepcopy(smol_tokenizer)
    masking.ensure_chat_template(tok)  # SmolLM2's own template has no generation markers
    assert "{% generation %}" in tok.chat_template or "{%- generation -%}" in tok.chat_template
    row = export.trace_to_chat(traces[0], system="SYS")
    enc = masking.tokenize_chat(row["messages"], tok, row["tools"])
    trained, masked = _split(enc, tok)
    assert trained == [
        'Let me compute it with Python.\n<tool_call>\n{"name": "python", "arguments": {"code": "print(2 + 3)"}}\n'
        "</tool_call><|im_end|>",
        "The answer is \\boxed{5}.<|im_end|>",
    ]
    assert masked[0].startswith("<|im_start|>system\nSYS\n\n# Tools")
    assert masked[0].endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert (
        masked[1]
        == "\n<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert masked[2] == "\n"
    assert not any("5\n</tool_response>" in t for t in trained)


def test_chat_rows_loaded_through_arrow_tokenize_the_same(tmp_path, smol_tokenizer, traces):
    """Arrow fills missing keys with None; the template must not see them."""
    from datasets import load_dataset

    tok = copy.deepcopy(smol_tokenizer)
    masking.ensure_chat_template(tok)
    path = tmp_path / "c.jsonl"
    export.export_traces(traces[:2], path, "chat", system="SYS")
    ds = load_dataset("json", data_files=str(path), split="train")
    direct = export.trace_to_chat(traces[0], system="SYS")
    a = masking.tokenize_chat(ds[0]["messages"], tok, ds[0]["tools"])
    b = masking.tokenize_chat(direct["messages"], tok, direct["tools"])
    assert a == b


def test_truncation_keeps_labels_aligned(mc_tok, traces):
    text = export.render_mathcoder(traces[0], system="SYS")
    enc = masking.tokenize_mathcoder(text, mc_tok, max_length=10)
    assert len(enc["input_ids"]) == len(enc["labels"]) == 10


def test_template_without_markers_and_not_chatml_is_refused():
    class Tok:
        chat_template = "{{ messages }}"

        def get_vocab(self):
            return {"a": 0}

    with pytest.raises(ValueError, match="generation"):
        masking.ensure_chat_template(Tok())
