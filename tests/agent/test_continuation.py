"""Continuing the assistant turn on an OpenAI-compatible server (issue 14 §2, §3 first bullet).

Against a loopback fake server (``fakeserver.FakeOpenAIServer``) that plays vLLM or llama.cpp's own
server: the exact JSON each continue mode sends, round by round, for a two-round trajectory run on a
real kernel; the capability probe's requests and decision; the context length from ``/v1/models`` and
``/props``. The real llama.cpp server is in ``test_backend_llama.py``; the bundled GGUF templates
against the former hand-written ChatML renderer are below (``model`` marker).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from fakeserver import FakeOpenAIServer
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import BackendError
from mathagent.agent.backends.continuation import (
    ChatTemplate,
    clear_cache,
    partial_messages,
    probe,
    template_from,
    template_from_gguf,
)
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.formats import get_format
from mathagent.agent.loop import solve
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import Step, StepKind

pytestmark = [pytest.mark.server, pytest.mark.kernel]

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template as a tokenizer holds it (what vLLM renders with for a ChatML model)."""
MODEL = "qwen-tir"
VLLM_CARD = {"owned_by": "vllm", "max_model_len": 32768, "root": "/models/qwen-tir"}
R1 = "Let me compute.\n```python\nprint(6*7)\n```\n```output\n"  # the fake cuts it at the stop string
R2 = "So the answer is \\boxed{42}."
PROBLEM = "What is 6*7?"
CFG = AgentConfig(verify=False, cell_timeout=5)
SYS = load_prompt("markdown").text
SAMPLING = {"max_tokens": 1024, "stop": ["```output"], "temperature": 0.0, "top_p": 1.0, "stream": True}
BODY = "Let me compute.\n```python\nprint(6*7)\n```\n```output\n42\n```\n"
"""The assistant's message after round 1: its code, then the output block the harness appended."""


@pytest.fixture(autouse=True)
def _fresh_probes():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def pool():
    from mathagent.sandbox import KernelPool

    with KernelPool(size=1) as p:
        yield p


def vllm_server(**kw) -> FakeOpenAIServer:
    kw.setdefault("completions", [R1, R2])
    return FakeOpenAIServer(model=MODEL, model_card=dict(VLLM_CARD), **kw)


def trajectory(backend, pool):
    trace = asyncio.run(solve(PROBLEM, backend, pool, CFG))
    assert trace.final_answer == "42", trace.error
    assert [s.kind for s in trace.steps][:2] == [StepKind.TEXT, StepKind.CODE]
    return trace


def chatml(*turns: tuple[str, str], open_turn: str | None = None) -> str:
    out = "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns)
    return out if open_turn is None else out + f"<|im_start|>assistant\n{open_turn}"


# -- the exact payloads, round by round --------------------------------------------------------------


def test_completions_template_payloads(pool):
    with vllm_server() as srv:
        b = OpenAIBackend(
            model=MODEL,
            base_url=srv.base_url,
            continue_mode="completions",
            chat_template=ChatTemplate(CHATML),
        )
        t = trajectory(b, pool)
        head = (("system", SYS), ("user", PROBLEM))
        assert srv.requests == [
            {"model": MODEL, "prompt": chatml(*head, open_turn=""), "add_special_tokens": False, **SAMPLING},
            {
                "model": MODEL,
                "prompt": chatml(*head, open_turn=BODY),
                "add_special_tokens": False,
                **SAMPLING,
            },
        ]
    assert t.meta["continuation"]["mode"] == "completions"
    assert t.meta["continuation"]["label"] == "completions-template"


def test_chat_continue_payloads(pool):
    with vllm_server() as srv:
        b = OpenAIBackend(model=MODEL, base_url=srv.base_url, continue_mode="chat")
        t = trajectory(b, pool)
        head = [{"role": "system", "content": SYS}, {"role": "user", "content": PROBLEM}]
        assert srv.requests == [
            # nothing to continue yet: a plain chat request (vLLM's defaults open a new assistant turn)
            {"model": MODEL, "messages": head, **SAMPLING},
            {
                "model": MODEL,
                "messages": [*head, {"role": "assistant", "content": BODY}],
                "continue_final_message": True,
                "add_generation_prompt": False,
                **SAMPLING,
            },
        ]
    assert t.meta["continuation"]["mode"] == "chat"


def test_user_message_fallback_payloads_and_warning(pool, caplog):
    with vllm_server() as srv, caplog.at_level(logging.WARNING):
        b = OpenAIBackend(model=MODEL, base_url=srv.base_url, continue_mode="user")
        t = trajectory(b, pool)
        head = [{"role": "system", "content": SYS}, {"role": "user", "content": PROBLEM}]
        assert srv.requests == [
            {"model": MODEL, "messages": head, **SAMPLING},
            {
                "model": MODEL,
                "messages": [
                    *head,
                    {"role": "assistant", "content": "Let me compute.\n```python\nprint(6*7)\n```"},
                    {"role": "user", "content": "```output\n42\n```"},
                ],
                **SAMPLING,
            },
        ]
    assert t.meta["continuation"]["mode"] == "user"
    warned = [
        r for r in caplog.records if r.levelno == logging.WARNING and "user-message fallback" in r.message
    ]
    assert warned, [r.message for r in caplog.records]


# -- the probe -------------------------------------------------------------------------------------


def tokenizer_dir(path, template: str):
    """A real tokenizer folder (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>"
    )
    fast.chat_template = template
    fast.save_pretrained(path)
    return path


def test_auto_finds_the_tokenizer_of_vllms_root_and_checks_completions(pool, tmp_path):
    """vLLM's /v1/models names the model's folder (``root``); its tokenizer's template (which uses
    ``bos_token``, as transformers passes it) renders the prompt; the probe's only request is a
    one-token /v1/completions call."""
    folder = tokenizer_dir(tmp_path / "qwen-tir", "{{ bos_token }}" + CHATML)
    with FakeOpenAIServer(
        completions=["1", R1, R2], model=MODEL, model_card={**VLLM_CARD, "root": str(folder)}
    ) as srv:
        b = make_backend(MODEL, base_url=srv.base_url)
        cont = b.prepare()
        assert cont.mode == "completions" and cont.server == "vllm"
        assert cont.template_source == f"tokenizer files of {folder}"
        assert b.context_window == 32768 and "max_model_len" in b.context_source
        assert srv.requests == [{"model": MODEL, "prompt": "1", "max_tokens": 1, "temperature": 0}]
        trajectory(b, pool)
        head = (("system", SYS), ("user", PROBLEM))
        assert [r["prompt"] for r in srv.requests[1:]] == [
            "<s>" + chatml(*head, open_turn=""),
            "<s>" + chatml(*head, open_turn=BODY),
        ]
        # the probe is cached per process: a second backend on the same server sends nothing new
        n = len(srv.requests)
        assert make_backend(MODEL, base_url=srv.base_url).prepare() == cont and len(srv.requests) == n


def vllm_prompt_tokens(body: dict) -> int:
    """What vLLM would count: the chat rendered by the model's template, honouring the two fields."""
    msgs = body["messages"]
    if body.get("continue_final_message"):
        msgs = [*msgs[:-1], {**msgs[-1], "partial": True}]
    return len(
        ChatTemplate(CHATML).render(msgs, add_generation_prompt=body.get("add_generation_prompt", True))
    )


def test_auto_picks_chat_continue_when_the_server_honours_it(pool):
    with vllm_server(completions=["O", "K", R1, R2], prompt_tokens=vllm_prompt_tokens) as srv:
        b = make_backend(MODEL, base_url=srv.base_url)
        assert b.prepare().mode == "chat"
        probe_msgs = [{"role": "user", "content": "Say OK."}, {"role": "assistant", "content": "O"}]
        one = {"model": MODEL, "messages": probe_msgs, "max_tokens": 1, "temperature": 0}
        assert srv.requests == [
            {**one, "continue_final_message": True, "add_generation_prompt": False},
            {**one, "continue_final_message": False, "add_generation_prompt": False},
        ]
        t = trajectory(b, pool)
        assert srv.requests[-1]["continue_final_message"] is True
        assert srv.requests[-1]["messages"][-1] == {"role": "assistant", "content": BODY}
        assert t.meta["continuation"]["reason"] == "the chat endpoint honours continue_final_message"


def test_auto_falls_back_to_user_messages_with_a_warning(caplog):
    """A server that takes the fields but ignores them (same prompt either way), no template anywhere."""
    with FakeOpenAIServer(completions=["x"], model=MODEL) as srv, caplog.at_level(logging.WARNING):
        b = make_backend(MODEL, base_url=srv.base_url)
        cont = b.prepare()
        assert cont.mode == "user" and "ignored continue_final_message" in cont.reason
        assert "no chat template found" in cont.reason
        assert b.context_window is None  # the loop's budget then defaults to 4096
    assert any(r.levelno == logging.WARNING and "user-message fallback" in r.message for r in caplog.records)


def test_llama_cpp_props_give_context_and_template():
    props = {
        "default_generation_settings": {"n_ctx": 8192},
        "chat_template": CHATML,
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
    }
    with FakeOpenAIServer(
        completions=["1"], model=MODEL, model_card={"owned_by": "llamacpp"}, props=props
    ) as srv:
        b = make_backend(MODEL, base_url=srv.base_url)
        cont = b.prepare()
        assert (cont.mode, cont.server, cont.template_source) == (
            "completions",
            "llama.cpp",
            "llama.cpp /props chat_template",
        )
        assert b.context_window == 8192 and b.context_source == "llama.cpp /props n_ctx"


def test_given_context_wins_over_the_server():
    with vllm_server() as srv:
        b = OpenAIBackend(model=MODEL, base_url=srv.base_url, context_window=2048, continue_mode="chat")
        b.prepare()
        assert b.context_window == 2048 and b.context_source == "given"


def test_completions_mode_without_a_template_is_a_clear_error():
    with vllm_server() as srv:
        b = make_backend(MODEL, base_url=srv.base_url, continue_mode="completions")
        with pytest.raises(BackendError, match="needs 'qwen-tir'.s chat template.*/models/qwen-tir"):
            b.prepare()


def test_unreachable_server_and_bad_mode_are_clear_errors():
    from fakeserver import closed_port

    b = OpenAIBackend(model=MODEL, base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(BackendError, match="cannot reach .*/v1/models"):
        b.prepare()
    with pytest.raises(BackendError, match="unknown continue mode 'raw'"):
        OpenAIBackend(model=MODEL, base_url="http://127.0.0.1:9/v1", continue_mode="raw")
    with pytest.raises(BackendError, match="no chat template found in"):
        template_from("/nonexistent/tokenizer")


def test_probe_is_not_run_at_construction():
    b = make_backend(MODEL, base_url="http://127.0.0.1:9/v1")
    assert b.continuation is None and b.continue_mode == "auto"


def test_partial_messages_keeps_closed_turns_and_opens_the_last():
    fmt = get_format("markdown")
    steps = [
        Step(StepKind.TEXT, "Let me compute."),
        Step(StepKind.CODE, "print(6*7)"),
        Step(StepKind.EXECUTION, "42"),
    ]
    msgs = partial_messages(fmt, PROBLEM, steps, "S")
    assert msgs == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": PROBLEM},
        {"role": "assistant", "content": BODY, "partial": True},
    ]
    # the same prompt through the template equals the format's own raw-prompt rendering
    tmpl = ChatTemplate(CHATML)
    assert tmpl.render(msgs) == fmt.build_prompt(PROBLEM, steps, "S", render_chat=tmpl)


def test_probe_requires_a_known_mode():
    with pytest.raises(BackendError, match="unknown continue mode"):
        probe("http://127.0.0.1:9/v1", MODEL, requested="sometimes")


# -- the bundled models' GGUF templates equal the former hand-written ChatML ----------------------------

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml_reference(messages, add_generation_prompt=True, default_system=QWEN_SYSTEM) -> str:
    """The ChatML renderer mathagent used before (``llama_server.apply_chat_template``), kept here as
    the reference the model's own template must reproduce for the bundled Qwen models."""
    out = []
    if default_system is not None and (not messages or messages[0].get("role") != "system"):
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for i, m in enumerate(messages):
        content, role = m.get("content") or "", m.get("role", "user")
        if role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if i == len(messages) - 1 and role == "assistant" and m.get("partial"):
            return "".join(out) + f"<|im_start|>assistant\n{content}"
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


CASES = [
    [{"role": "user", "content": "P?"}],
    [{"role": "system", "content": SYS}, {"role": "user", "content": "P?"}],
    [{"role": "user", "content": "P?"}, {"role": "assistant", "content": "", "partial": True}],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "P?"},
        {"role": "assistant", "content": BODY, "partial": True},
    ],
    [
        {"role": "user", "content": "P?"},
        {"role": "assistant", "content": "Code:\n```python\nprint(1)\n```"},
        {"role": "user", "content": "```output\n1\n```"},
        {"role": "assistant", "content": "  trailing spaces and\n\n", "partial": True},
    ],
    [
        {"role": "user", "content": "P?"},
        {"role": "assistant", "content": "A"},
        {"role": "tool", "content": "1"},
    ],
]


@pytest.mark.model
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_gguf_template_equals_the_former_chatml_renderer(name):
    from mathagent.agent.models import ModelError, model_path

    try:
        path = model_path(name)
    except ModelError as e:
        pytest.skip(str(e))
    tmpl = template_from_gguf(str(path))
    assert tmpl is not None and tmpl.source.startswith("GGUF metadata of")
    for msgs in CASES:
        assert tmpl.render(msgs) == chatml_reference(msgs), msgs
    assert tmpl.render(CASES[0], add_generation_prompt=False) == chatml_reference(CASES[0], False)


# -- the run header --------------------------------------------------------------------------------


def test_eval_records_and_prints_how_it_continued(tmp_path, capsys, shared_data):
    """`mathagent eval --base-url ... --continue-mode chat` on a fake vLLM: the run header records the
    mode, the reason and the server's context length, and the terminal says it."""
    import json

    from mathagent.evals.cli_eval import main as eval_main
    from mathagent.evals.datasets import load_problems

    gold = load_problems("gsm8k", limit=1)[0].gold
    answer = f"Let me compute.\n```python\nprint({gold})\n```\nSo \\boxed{{{gold}}}."
    with vllm_server(completions=[answer]) as srv:
        args = ["--dataset", "gsm8k", "--limit", "1", "--base-url", srv.base_url, "--model", MODEL]
        args += ["--continue-mode", "chat", "--no-verify", "--run-dir", str(tmp_path / "run"), "--json"]
        assert eval_main(args) == 0
    err = capsys.readouterr().err
    assert "continue mode chat-continue (asked for with --continue-mode chat)" in err
    assert "context 32768 tokens (vLLM /v1/models max_model_len)" in err
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    assert header["backend"]["continuation"]["mode"] == "chat"
    assert header["backend"]["context_window"] == 32768
    rec = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert rec["trace"]["meta"]["continuation"]["label"] == "chat-continue"
