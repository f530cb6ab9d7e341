"""Pure functions: traceback cleaning, the capped collector, model_view. No kernel."""

from __future__ import annotations

from mathagent.sandbox.base import ExecError, ExecResult
from mathagent.sandbox.output import OutputCollector, clean_traceback, elide, model_view, strip_ansi


def test_strip_ansi_and_clean_traceback_drops_internal_frames():
    frames = [
        "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
        "\x1b[0;31mZeroDivisionError\x1b[0m  Traceback (most recent call last)",
        "File \x1b[0;32m/usr/lib/python3/site-packages/IPython/core/interactiveshell.py:3577\x1b[0m, in run_code\n  exec()",
        "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n----> 1 1/0\n",
        "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
    ]
    tb = clean_traceback(frames)
    assert "\x1b" not in tb
    assert "interactiveshell" not in tb
    assert "-----" not in tb
    assert tb.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "Cell In[1], line 1" in tb
    assert strip_ansi("\x1b[1;32mok\x1b[0m") == "ok"


def test_collector_caps_bytes_and_counts_everything():
    c = OutputCollector(cap=10)
    c.add("stdout", "abcdef")
    c.add("stderr", "ghijkl")
    c.add("stdout", "mnop")
    r = c.build(wall_s=0.1)
    assert r.stdout == "abcdef" and r.stderr == "ghij"
    assert r.truncated and r.output_bytes == 16


def test_collector_never_splits_a_utf8_character():
    c = OutputCollector(cap=5)
    c.add("stdout", "ééé")  # 6 bytes
    r = c.build()
    assert r.stdout == "éé" and r.truncated


def test_elide_keeps_head_and_tail():
    text = "".join(f"line {i}\n" for i in range(1000))
    out = elide(text, 300)
    assert out.startswith("line 0\n") and out.rstrip().endswith("line 999")
    assert "characters elided" in out and len(out) < 400
    assert elide("short", 300) == "short"


MODEL_VIEW_TABLE = [
    (ExecResult(stdout="4\n"), "4"),
    (ExecResult(result="2*sqrt(2)"), "2*sqrt(2)"),
    (ExecResult(stdout="a\n", result="3"), "a\n3"),
    (ExecResult(), ""),
    (
        ExecResult(
            error=ExecError(
                "ZeroDivisionError",
                "division by zero",
                "Cell In[1]\n----> 1 1/0\nZeroDivisionError: division by zero",
            )
        ),
        "Cell In[1]\n----> 1 1/0\nZeroDivisionError: division by zero",
    ),
    (
        ExecResult(error=ExecError("NameError", "name 'x' is not defined", "")),
        "NameError: name 'x' is not defined",
    ),
    (
        ExecResult(timed_out=True, kernel_restarted=True, error=ExecError("TimeoutError", "", "")),
        "TimeoutError: cell exceeded 10 s; kernel restarted, all variables lost",
    ),
    (
        ExecResult(timed_out=True, error=ExecError("TimeoutError", "", "")),
        "TimeoutError: cell exceeded 10 s; interrupted",
    ),
    (
        ExecResult(kernel_restarted=True),
        "KernelDied: the kernel crashed; kernel restarted, all variables lost",
    ),
    (
        ExecResult(stdout="x" * 10, truncated=True, output_bytes=5_000_000),
        "xxxxxxxxxx\n[output truncated: the cell emitted 5000000 bytes]",
    ),
]


def test_model_view_table():
    for result, expected in MODEL_VIEW_TABLE:
        assert model_view(result, timeout_s=10) == expected, result


def test_model_view_bounds_long_output_and_keeps_the_error():
    r = ExecResult(stdout="y" * 100_000, error=ExecError("ValueError", "bad", "ValueError: bad"))
    out = model_view(r, max_chars=500)
    assert len(out) <= 520
    assert out.endswith("ValueError: bad")
    assert "characters elided" in out


def test_exec_result_round_trips():
    r = ExecResult(stdout="a", error=ExecError("E", "v", "tb"), timed_out=True, wall_s=1.5)
    assert ExecResult.from_dict(r.to_dict()) == r


def test_safe_text_is_valid_utf8_without_terminal_controls():
    from mathagent.sandbox.output import safe_text

    raw = (
        "a\x1b]0;title\x07b\x1b]52;c;ZXZpbA==\x1b\\c\x1b[2J\x1b[10;1Hd\x9b31me\x9d8;;http://x\x9cf"
        "\udcff\ud800g\x00\x07\x08h\r\n\tz π 😀"
    )
    out = safe_text(raw)
    out.encode("utf-8")  # no lone surrogate left
    assert out == "abcde" + "f\ufffd\ufffdgh\r\n\tz π 😀"
    assert safe_text("plain text\n") == "plain text\n"


def test_collector_cuts_the_result_in_bytes_and_counts_what_the_kernel_dropped():
    c = OutputCollector(cap=10)
    c.set_result("😀" * 4, dropped=100)  # 16 bytes offered, 100 more cut in the kernel
    r = c.build()
    assert r.result == "😀😀" and r.truncated and r.output_bytes == 116
