"""The hub fallback for standard sets (evals/hub.py), against a fake Hugging Face Hub on loopback.

The fake hub implements only what `datasets` 5.2 / `huggingface_hub` 2.4 call to load a data-only repo
at a pinned commit (found by logging every request of a real `load_dataset` run):

- ``GET /api/datasets/{repo}/revision/{rev}``: the repo's commit sha (our reachability check, and
  `datasets` asks again),
- ``HEAD``/``GET /datasets/{repo}/resolve/{rev}/{path}``: file metadata (``X-Repo-Commit``, ``ETag``)
  and bytes; a missing file is a 404 with ``X-Error-Code: EntryNotFound`` (README.md,
  ``<name>.py``, ``.huggingface.yaml``, ``dataset_infos.json`` are probed),
- ``GET /api/datasets/{repo}/tree/{rev}[/{dir}]``: directory listings used to resolve data-file globs.

Anything else (the client's agent-registry probe) gets a plain 404. Every load runs in a child
process, because `datasets` and `huggingface_hub` read ``HF_ENDPOINT`` once at import. The child
points ``data_dirs`` at an empty folder: the shared reference folder would otherwise hold every set.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mathagent.evals import hub
from mathagent.evals.datafiles import LOCAL
from mathagent.evals.datasets import DatasetError, _convert, load_problems, read_jsonl, shipped_path

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")

DATA_README = b"# fake data set card\n"


def _configs_readme(config: str, split: str, pattern: str) -> bytes:
    return (
        f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: {split}\n    path: {pattern}\n---\n"
        "# fake data set card\n"
    ).encode()


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


class FakeHub:
    """Data set repos served on 127.0.0.1 at a random port; ``requests`` logs every call."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.requests: list[str] = []
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub_._handle(self, head=False)

            def do_HEAD(self) -> None:
                hub_._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Serve a repo; a pinned 40-hex ``revision`` becomes its commit, else a made-up sha."""
        sha = revision if len(revision) == 40 else hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = (sha, files)
        return sha

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        self.requests.append(f"{req.command} {req.path}")
        parts = urllib.parse.urlsplit(req.path)
        segs = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
        if segs[:2] == ["api", "datasets"] and len(segs) >= 6:
            repo_id, kind, rev, rest = f"{segs[2]}/{segs[3]}", segs[4], segs[5], "/".join(segs[6:])
        elif segs[:1] == ["datasets"] and len(segs) >= 6 and segs[3] == "resolve":
            repo_id, kind, rev, rest = f"{segs[1]}/{segs[2]}", "resolve", segs[4], "/".join(segs[5:])
        else:
            return self._send(req, head, 404, b"no such route")
        if repo_id not in self.repos:
            return self._send(req, head, 404, b"repo not found", {"X-Error-Code": "RepoNotFound"})
        sha, files = self.repos[repo_id]
        if rev not in ("main", sha):
            return self._send(req, head, 404, b"revision not found", {"X-Error-Code": "RevisionNotFound"})
        if kind == "revision":
            info = {
                "id": repo_id,
                "sha": sha,
                "private": False,
                "siblings": [{"rfilename": f} for f in files],
            }
            return self._send(req, head, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        if kind == "resolve":
            if rest not in files:
                return self._send(req, head, 404, b"entry not found", {"X-Error-Code": "EntryNotFound"})
            etag = '"' + hashlib.sha256(files[rest]).hexdigest() + '"'
            return self._send(req, head, 200, files[rest], {"X-Repo-Commit": sha, "ETag": etag})
        if kind == "tree":
            recursive = urllib.parse.parse_qs(parts.query).get("recursive", ["false"])[0].lower() == "true"
            entries = self._tree(files, rest.strip("/"), recursive)
            if entries is None:
                return self._send(req, head, 404, b"entry not found", {"X-Error-Code": "EntryNotFound"})
            return self._send(
                req, head, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}
            )
        return self._send(req, head, 404, b"no such route")

    @staticmethod
    def _tree(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict] | None:
        prefix = folder + "/" if folder else ""
        out: dict[str, dict] = {}
        for path, data in files.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                d = prefix + "/".join(parts[:depth])
                out[d] = {
                    "type": "directory",
                    "oid": hashlib.sha1(d.encode()).hexdigest(),
                    "size": 0,
                    "path": d,
                }
            if recursive or len(parts) == 1:
                out[path] = {
                    "type": "file",
                    "oid": hashlib.sha1(data).hexdigest(),
                    "size": len(data),
                    "path": path,
                }
        return list(out.values()) if out or not folder else None

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, head: bool, code: int, body: bytes, headers: dict | None = None):
        req.send_response(code)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)


@pytest.fixture
def fake_hub():
    h = FakeHub()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(autouse=True)
def _no_hub_in_process(monkeypatch, tmp_path):
    """In-process calls never reach a network; the cache lives in the test's temp dir."""
    monkeypatch.setenv("MATHAGENT_NO_HUB", "1")
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "cache"))


CHILD = r"""
import json, sys, time
from pathlib import Path
if sys.argv[4] == "no-datasets":
    sys.modules["datasets"] = None  # as if the optional library were not installed
from mathagent.evals import datasets as ds, hub
ds.data_dirs = lambda: [Path(sys.argv[1])]
action, names = sys.argv[2], sys.argv[3].split(",")
out = {"results": {}}
t = time.monotonic()
for name in names:
    try:
        if action == "load":
            problems = ds.load_problems(name)
            res = {"problems": [p.to_dict() for p in problems], "info": ds.dataset_info(name)}
        else:
            path = hub.fetch(name)
            res = {"problems": [p.to_dict() for p in ds._convert(name, ds.read_jsonl(path), path)]}
    except ds.DatasetError as e:
        res = {"error": str(e)}
    out["results"][name] = res
out["seconds"] = time.monotonic() - t
out["datasets_imported"] = sys.modules.get("datasets") is not None
print(json.dumps(out))
"""


def run_child(
    tmp_path: Path, endpoint: str, action: str, names: list[str], env: dict | None = None, mode="-"
):
    """Run loads in a fresh interpreter pointed at ``endpoint``; returns its JSON report."""
    empty = tmp_path / "no_local_data"
    empty.mkdir(exist_ok=True)
    child_env = {  # TRANSFORMERS_OFFLINE also switches huggingface_hub off (.ci/run sets it)
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MATHAGENT_", "TRANSFORMERS_"))
    }
    child_env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf_home"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        MATHAGENT_CACHE_DIR=str(tmp_path / "cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(empty), action, ",".join(names), mode],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _local(shared_data: Path, name: str) -> list[dict]:
    path = shared_data / "datasets" / LOCAL[name] if name in LOCAL else shipped_path(name)
    return [p.to_dict() for p in _convert(name, read_jsonl(path), path)]


def _drop(rows: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def serve_svamp(fake_hub: FakeHub, rows: list[dict]) -> str:
    src = hub.SOURCES["svamp"]
    files = {
        "README.md": _configs_readme("default", "test", "data/test-*"),
        "data/test-00000-of-00001.parquet": _parquet(rows),
    }
    return fake_hub.add(src.repo_id, files, src.revision)


@pytest.mark.server
def test_svamp_through_fake_hub_then_from_cache_with_hub_stopped(fake_hub, shared_data, tmp_path):
    local_rows = read_jsonl(shared_data / "datasets" / "svamp_test.jsonl")
    commit = serve_svamp(fake_hub, _drop(local_rows, "idx"))  # the hub copy has no idx column

    first = run_child(tmp_path, fake_hub.url, "load", ["svamp"])["results"]["svamp"]
    assert "error" not in first, first
    assert first["problems"] == _local(shared_data, "svamp")  # same records as the local file gives
    served = [r for r in fake_hub.requests if "/resolve/" in r and r.endswith(".parquet")]
    assert served and served[-1].startswith("GET "), (
        fake_hub.requests
    )  # the real client fetched the data file
    assert not any("datasets-server" in r for r in fake_hub.requests)

    cache = tmp_path / "cache" / "datasets"
    record = json.loads((cache / "svamp.source.json").read_text())
    assert record["repo_id"] == "tongyx361/svamp" and record["commit"] == commit
    assert record["revision"] == hub.SOURCES["svamp"].revision and record["rows"] == 1000
    assert record["sha256"] == hashlib.sha256((cache / "svamp.jsonl").read_bytes()).hexdigest()
    assert sorted(p.name for p in cache.iterdir()) == [
        "svamp.jsonl",
        "svamp.source.json",
    ]  # no temp files left
    info = first["info"]
    assert info["path"] == str(cache / "svamp.jsonl") and info["sha256"] == record["sha256"]
    assert info["source"] == {"repo_id": "tongyx361/svamp", "config": None, "split": "test",
                              "revision": record["revision"], "commit": commit}  # fmt: skip

    fake_hub.stop()
    second = run_child(tmp_path, fake_hub.url, "load", ["svamp"])
    assert second["results"]["svamp"]["problems"] == first["problems"]
    assert second["results"]["svamp"]["info"] == info
    assert not second["datasets_imported"]  # served from the cache: the hub client was never loaded


@pytest.mark.server
def test_every_hub_source_maps_like_the_local_file(fake_hub, shared_data, tmp_path):
    d = shared_data / "datasets"
    S = hub.SOURCES
    fake_hub.add(S["gsm-hard"].repo_id, {"README.md": DATA_README, "gsmhardv2.jsonl": _jsonl(
        _drop(read_jsonl(d / "gsm_hard_test.jsonl"), "idx"))}, S["gsm-hard"].revision)  # fmt: skip
    aime = [{**r, "year": "2024"} for r in _drop(read_jsonl(d / "aime24_test.jsonl"), "question")]
    fake_hub.add(
        S["aime24"].repo_id, {"data/train-00000-of-00001.parquet": _parquet(aime)}, S["aime24"].revision
    )
    amc = _drop(read_jsonl(d / "amc23_test.jsonl"), "question")
    amc_2022 = [{**r, "id": 100 + i, "url": r["url"].replace("2023", "2022")} for i, r in enumerate(amc[:5])]
    files = {"README.md": _configs_readme("default", "train", "data/train-*"),
             "data/train-00000-of-00001.parquet": _parquet(amc_2022[:2] + amc + amc_2022[2:])}  # fmt: skip
    fake_hub.add(S["amc23"].repo_id, files, S["amc23"].revision)
    gsm8k = read_jsonl(shipped_path("gsm8k"))
    files = {"README.md": _configs_readme("main", "test", "main/test-*").replace(
                b"---\n#", b"- config_name: socratic\n  data_files:\n  - split: test\n    path: socratic/test-*\n---\n#"),
             "main/test-00000-of-00001.parquet": _parquet(gsm8k),
             "socratic/test-00000-of-00001.parquet": _parquet(gsm8k[:3])}  # fmt: skip
    fake_hub.add(S["gsm8k"].repo_id, files, S["gsm8k"].revision)
    files = {"README.md": DATA_README, "test.jsonl": shipped_path("math500").read_bytes()}
    fake_hub.add(S["math500"].repo_id, files, S["math500"].revision)

    names = ["gsm-hard", "aime24", "amc23", "gsm8k", "math500"]
    out = run_child(tmp_path, fake_hub.url, "fetch", names)["results"]
    for name in names:
        assert "error" not in out[name], (name, out[name])
        assert out[name]["problems"] == _local(shared_data, name), name
    assert [p["id"] for p in out["amc23"]["problems"]] == [str(r["id"]) for r in amc]  # 2022 rows dropped


@pytest.mark.server
def test_unreachable_hub_fails_fast_with_a_useful_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = run_child(tmp_path, f"http://127.0.0.1:{port}", "load", ["svamp"])
    err = out["results"]["svamp"]["error"]
    assert "svamp_test.jsonl" in err and str(tmp_path / "no_local_data") in err  # what was searched locally
    assert "tongyx361/svamp" in err and f"127.0.0.1:{port}" in err and "ConnectError" in err
    assert out["seconds"] < 10, out["seconds"]
    assert not (tmp_path / "cache" / "datasets" / "svamp.jsonl").exists()


@pytest.mark.server
def test_silent_hub_times_out(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # accepts connections (kernel backlog) but never answers
        port = s.getsockname()[1]
        out = run_child(
            tmp_path, f"http://127.0.0.1:{port}", "load", ["aime24"], {"MATHAGENT_HUB_TIMEOUT": "1"}
        )
    err = out["results"]["aime24"]["error"]
    assert "HuggingFaceH4/aime_2024" in err and "Timeout" in err, err
    assert out["seconds"] < 8, out["seconds"]


@pytest.mark.server
@pytest.mark.parametrize("var", ["MATHAGENT_NO_HUB", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_switched_off_makes_no_request(var, fake_hub, tmp_path):
    serve_svamp(
        fake_hub, [{"ID": "a", "Body": "b", "Question": "q", "Equation": "1", "Answer": 1.0, "Type": "t"}]
    )
    out = run_child(tmp_path, fake_hub.url, "load", ["svamp"], {var: "1"})
    err = out["results"]["svamp"]["error"]
    assert f"{var}=1" in err and "tongyx361/svamp" in err and "svamp_test.jsonl" in err
    assert fake_hub.requests == [] and not out["datasets_imported"]


@pytest.mark.server
def test_math_is_never_taken_from_the_hub(fake_hub, tmp_path):
    out = run_child(tmp_path, fake_hub.url, "load", ["math"])
    err = out["results"]["math"]["error"]
    assert "MARIO" in err and "math_test.jsonl" in err and "math500" in err
    assert fake_hub.requests == [] and not out["datasets_imported"]


@pytest.mark.server
def test_wrong_row_count_or_missing_repo_is_an_error_and_nothing_is_cached(fake_hub, tmp_path):
    serve_svamp(fake_hub, [{"ID": f"x{i}", "Body": "b", "Question": "q", "Equation": "1", "Answer": 1.0,
                            "Type": "t"} for i in range(3)])  # fmt: skip
    out = run_child(tmp_path, fake_hub.url, "load", ["svamp", "gsm-hard"])["results"]
    assert "gave 3 svamp problems, expected 1000" in out["svamp"]["error"]
    assert "reasoning-machines/gsm-hard" in out["gsm-hard"]["error"]
    assert "RepositoryNotFoundError" in out["gsm-hard"]["error"]
    assert not (tmp_path / "cache" / "datasets").exists() or not any(
        (tmp_path / "cache" / "datasets").iterdir()
    )


@pytest.mark.server
def test_without_the_datasets_library_the_error_says_what_to_install(fake_hub, tmp_path):
    out = run_child(tmp_path, fake_hub.url, "load", ["amc23"], mode="no-datasets")
    assert "pip install datasets" in out["results"]["amc23"]["error"]
    assert fake_hub.requests == []


# In-process: the cache rules (the autouse fixture keeps the hub off).


def _cache(tmp_path: Path, name: str, rows: list[dict], **record) -> Path:
    path = tmp_path / "cache" / "datasets" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = hub.SOURCES[name]
    full = {"repo_id": src.repo_id, "config": src.config, "split": src.split, "revision": src.revision,
            "commit": "c" * 40, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **record}  # fmt: skip
    path.with_name(f"{name}.source.json").write_text(json.dumps(full))
    return path


def test_cache_dir_follows_mathagent_cache_dir(monkeypatch, tmp_path):
    assert hub.cache_dir() == tmp_path / "cache" / "datasets"
    monkeypatch.delenv("MATHAGENT_CACHE_DIR")
    assert hub.cache_dir() == Path.home() / ".cache" / "mathagent" / "datasets"


def test_a_valid_cache_is_used_and_a_tampered_one_is_refused(monkeypatch, tmp_path):
    import mathagent.evals.datasets as ds

    monkeypatch.setattr(ds, "data_dirs", lambda: [tmp_path / "empty"])
    rows = [{"id": 7, "problem": "What is 1+1?", "answer": "2", "url": "u"}]
    path = _cache(tmp_path, "aime24", rows)
    problems = load_problems("aime24")
    assert [(p.id, p.question, p.gold, p.dataset) for p in problems] == [("7", "What is 1+1?", "2", "aime24")]
    assert ds.dataset_info("aime24")["source"]["commit"] == "c" * 40

    with open(path, "a") as f:
        f.write(json.dumps({"id": 8, "problem": "injected", "answer": "0"}) + "\n")
    with pytest.raises(DatasetError, match=r"does not match the sha256.*MATHAGENT_NO_HUB=1"):
        load_problems("aime24")


def test_hub_off_reason_reads_the_usual_truthy_values(monkeypatch):
    for var in ("MATHAGENT_NO_HUB", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert hub.hub_off_reason() is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.hub_off_reason() is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "ON")
    assert hub.hub_off_reason() == "HF_DATASETS_OFFLINE=ON"


def test_every_standard_set_has_a_source_or_a_stated_reason():
    assert set(hub.SOURCES) | set(hub.NO_SOURCE) == {"gsm8k", "math500", *LOCAL}
    assert not set(hub.SOURCES) & set(hub.NO_SOURCE)
    assert (
        hub.SOURCES["amc23"].convert({"id": 1, "problem": "p", "answer": 3.0, "url": "x/2022_AMC"}, 0) is None
    )


def test_fetch_refuses_when_off_without_touching_the_cache(tmp_path):
    with pytest.raises(DatasetError, match="MATHAGENT_NO_HUB=1"):
        hub.fetch("svamp")
    assert not (tmp_path / "cache").exists()


# -- the training splits (issue 14 §5) -------------------------------------------------------------
def serve_gsm8k_train(fake_hub: FakeHub, rows: list[dict]) -> str:
    src = hub.SOURCES["gsm8k-train"]
    files = {
        "README.md": _configs_readme("main", "train", "main/train-*"),
        "main/train-00000-of-00001.parquet": _parquet(rows),
    }
    return fake_hub.add(src.repo_id, files, src.revision)


@pytest.mark.server
def test_gsm8k_train_through_fake_hub_is_checked_against_its_pinned_checksum(fake_hub, shared_data, tmp_path):
    reference = read_jsonl(shared_data / "datasets" / "gsm8k_train.jsonl")
    serve_gsm8k_train(fake_hub, reference)
    good = run_child(tmp_path, fake_hub.url, "load", ["gsm8k-train"])["results"]["gsm8k-train"]
    assert "error" not in good, good
    assert good["problems"] == _local(shared_data, "gsm8k-train")
    assert len(good["problems"]) == 7473 and good["problems"][0]["gold"] == "72"
    assert good["problems"][0]["meta"]["solution"].startswith("Natalia sold")

    tampered = [dict(r) for r in reference]
    tampered[100]["answer"] = tampered[100]["answer"].replace("####", "#### 1")  # one gold changed
    serve_gsm8k_train(fake_hub, tampered)
    other = tmp_path / "other"  # a fresh client cache: the commit is the same pinned one
    other.mkdir()
    bad = run_child(other, fake_hub.url, "fetch", ["gsm8k-train"])["results"]["gsm8k-train"]
    assert "sha256" in bad["error"] and "not the pinned" in bad["error"], bad
    assert not (other / "cache" / "datasets" / "gsm8k-train.jsonl").exists()  # nothing cached
    assert good["info"]["source"]["split"] == "train"


@pytest.mark.server
def test_math_train_by_name_through_fake_hub(fake_hub, shared_data, tmp_path):
    """MATH train is in no reference folder: it comes from its hub source, gold from the solutions."""
    test_rows = read_jsonl(shared_data / "datasets" / "math_test.jsonl")
    rows = [
        {k: test_rows[i % len(test_rows)][k] for k in ("problem", "level", "type", "solution")}
        for i in range(7500)
    ]  # stand-in rows of the right layout and count
    src = hub.SOURCES["math-train"]
    files = {
        "README.md": _configs_readme("default", "train", "data/train-*"),
        "data/train-00000-of-00001.parquet": _parquet(rows),
    }
    commit = fake_hub.add(src.repo_id, files, src.revision)
    out = run_child(tmp_path, fake_hub.url, "load", ["math-train"])["results"]["math-train"]
    assert "error" not in out, out
    problems = out["problems"]
    assert len(problems) == 7500 and problems[0]["dataset"] == "math-train"
    assert problems[0]["question"] == rows[0]["problem"] and problems[0]["level"] == "3"
    assert problems[0]["meta"]["solution"] == rows[0]["solution"]
    assert all(p["gold"] and "\\boxed" not in p["gold"] for p in problems)
    assert problems[0]["gold"] == "2"  # "... the graph has $\\boxed{2}$ vertical asymptotes."
    assert out["info"]["source"] == {"repo_id": src.repo_id, "config": None, "split": "train",
                                     "revision": src.revision, "commit": commit}  # fmt: skip
