"""bitnet.hub and `bitnet download`, without network.

A fake Hugging Face cache is built in tmp_path in huggingface_hub's layout
(``models--owner--name/{blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>,
refs/<branch>}``) and offline mode is switched on, so every lookup is served from it. The
online code paths are exercised with huggingface_hub's functions replaced by fakes that raise
its real exception types. An autouse guard fails any test that opens a socket.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub as hh
import numpy as np
import pytest
from huggingface_hub import constants, errors

from bitnet import hub
from bitnet.commands import download as download_cmd
from bitnet.hub import HubError

REPO = "owner/name"


# ----------------------------------------------------------------------------------------------
# Fixtures and the fake cache


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Any attempt to resolve a host or open a connection fails the test."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, both in the environment and in huggingface_hub's import-time constant."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off; tests using it replace the huggingface_hub calls that would connect."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    d = (tmp_path / "hf-cache").resolve()
    d.mkdir()
    return d


def random_commit(rng: np.random.Generator) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, 20, dtype=np.uint8))


def random_bytes(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def make_snapshot(
    cache: Path,
    repo_id: str,
    commit: str,
    files: dict[str, bytes],
    refs: tuple[str, ...] = ("main",),
) -> Path:
    """Writes one commit of a repo in huggingface_hub's cache layout; returns its snapshot dir.

    Blobs are content-addressed; snapshot entries are relative symlinks into blobs/; each ref file
    holds the bare commit hash (no newline, as huggingface_hub writes it).
    """
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    snap = folder / "snapshots" / commit
    for name, data in files.items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    snap.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snap


def checkpoint_files(rng: np.random.Generator) -> dict[str, bytes]:
    return {
        "config.json": b'{"hidden_size": %d}' % int(rng.integers(64, 4096)),
        "model.safetensors": random_bytes(rng, int(rng.integers(1, 3000))),
        "tokenizer.json": random_bytes(rng, int(rng.integers(1, 500))),
        "README.md": b"# model card\n",
        "sub/extra.bin": random_bytes(rng, 257),
    }


def assert_files(snapshot: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (snapshot / name).read_bytes() == data, name


# ----------------------------------------------------------------------------------------------
# is_repo_id


@pytest.mark.parametrize(
    "s",
    [
        "owner/name",
        "microsoft/bitnet-b1.58-2B-4T",
        "a/b",
        "user_1/model.v2",
        "_x/y_",
        "A" * 96 + "/" + "b" * 96,
    ],
)
def test_is_repo_id_accepts(s: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert hub.is_repo_id(s)


@pytest.mark.parametrize(
    "s",
    [
        "gpt2",  # no namespace: indistinguishable from a relative path
        "a/b/c",
        "/abs/path",
        "./x/y",
        "../x",
        "a--b/c",
        "a/b..c",
        "a/b.git",
        "-a/b",
        "a/b-",
        "a/.b",
        "",
        "a/",
        "/b",
        "A" * 97 + "/b",
        "\u00fc/b",
        "a b/c",
        "a\\b",
    ],
)
def test_is_repo_id_rejects(s: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not hub.is_repo_id(s)


def test_is_repo_id_rejects_existing_paths_and_non_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert hub.is_repo_id("models/m1")
    (tmp_path / "models" / "m1").mkdir(parents=True)
    assert not hub.is_repo_id("models/m1")
    (tmp_path / "models" / "f.json").write_text("{}")
    assert not hub.is_repo_id("models/f.json")
    assert not hub.is_repo_id(Path("owner/name"))  # type: ignore[arg-type]
    assert not hub.is_repo_id(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# download (offline, from the fake cache)


def test_download_returns_snapshot_with_files(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(1)
    commit = random_commit(rng)
    files = checkpoint_files(rng)
    snap = make_snapshot(cache, REPO, commit, files)
    got = hub.download(REPO, cache_dir=cache, progress=False)
    assert isinstance(got, Path)
    assert got == snap
    assert got.name == commit
    assert_files(got, files)
    # str and PathLike cache dirs, progress on: same answer.
    assert hub.download(REPO, cache_dir=str(cache)) == snap


def test_download_revision_by_branch_and_commit(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(2)
    c_main, c_dev, c_old = (random_commit(rng) for _ in range(3))
    f_main = {"config.json": random_bytes(rng, 31)}
    f_dev = {"config.json": random_bytes(rng, 45), "model.safetensors": random_bytes(rng, 999)}
    f_old = {"weights.pt": random_bytes(rng, 7)}
    s_main = make_snapshot(cache, REPO, c_main, f_main, refs=("main",))
    s_dev = make_snapshot(cache, REPO, c_dev, f_dev, refs=("dev", "v1.0"))
    s_old = make_snapshot(cache, REPO, c_old, f_old, refs=())  # reachable by hash only

    assert hub.download(REPO, cache_dir=cache, progress=False) == s_main
    assert hub.download(REPO, revision="main", cache_dir=cache, progress=False) == s_main
    assert hub.download(REPO, revision="dev", cache_dir=cache, progress=False) == s_dev
    assert hub.download(REPO, revision="v1.0", cache_dir=cache, progress=False) == s_dev
    assert hub.download(REPO, revision=c_old, cache_dir=cache, progress=False) == s_old
    assert hub.download(REPO, revision=c_main, cache_dir=cache, progress=False) == s_main
    assert_files(s_dev, f_dev)
    assert_files(s_old, f_old)


def test_download_missing_repo_offline(cache: Path, offline: None) -> None:
    make_snapshot(cache, "owner/other", random_commit(np.random.default_rng(3)), {"a": b"x"})
    with pytest.raises(HubError) as ei:
        hub.download("owner/missing", cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert "offline" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "'owner/missing'" in msg
    assert str(cache) in msg
    assert "bitnet download owner/missing" in msg
    assert isinstance(ei.value, OSError)
    assert ei.value.repo_id == "owner/missing"


def test_download_missing_revision_offline(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(4)
    commit = random_commit(rng)
    make_snapshot(cache, REPO, commit, {"config.json": b"{}"})
    with pytest.raises(HubError) as ei:
        hub.download(REPO, revision="no-such-branch", cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert "offline" in msg and "'no-such-branch'" in msg and f"'{REPO}'" in msg
    assert "main" in msg and commit in msg  # what the cache does hold
    assert "--revision no-such-branch" in msg
    assert ei.value.revision == "no-such-branch"

    other = random_commit(rng)
    with pytest.raises(HubError, match=other):
        hub.download(REPO, revision=other, cache_dir=cache, progress=False)


def test_download_env_offline_is_effective_at_call_time(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the environment variable is set (after huggingface_hub was imported): still no
    network attempt (the autouse guard), and the offline error."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline"):
        hub.download("owner/absent", cache_dir=cache, progress=False)
    snap = make_snapshot(cache, REPO, random_commit(np.random.default_rng(5)), {"c": b"1"})
    assert hub.download(REPO, cache_dir=cache, progress=False) == snap


def test_download_allow_patterns(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(6)
    files = checkpoint_files(rng)
    snap = make_snapshot(cache, REPO, random_commit(rng), files)
    assert hub.download(REPO, cache_dir=cache, allow_patterns=["*.json"], progress=False) == snap
    assert hub.download(REPO, cache_dir=cache, allow_patterns=["sub/"], progress=False) == snap
    with pytest.raises(HubError) as ei:
        hub.download(REPO, cache_dir=cache, allow_patterns=["*.gguf"], progress=False)
    assert "*.gguf" in str(ei.value) and "offline" in str(ei.value)


def test_download_dangling_snapshot_entry_is_not_a_file(cache: Path, offline: None) -> None:
    """A snapshot whose blob was deleted (interrupted download, manual cleanup) has no usable
    file: it does not count as cached."""
    snap = make_snapshot(cache, REPO, random_commit(np.random.default_rng(7)), {"m.gguf": b"G"})
    (snap / "m.gguf").resolve().unlink()
    with pytest.raises(HubError, match=r"\*\.gguf"):
        hub.download(REPO, cache_dir=cache, allow_patterns=["*.gguf"], progress=False)


@pytest.mark.parametrize("bad", ["not a repo", "a--b/c", "../x", "o/n.git", "a/b/c", "", "-x/y"])
def test_download_invalid_repo_id(bad: str, cache: Path, offline: None) -> None:
    with pytest.raises(HubError, match="invalid Hugging Face repo id"):
        hub.download(bad, cache_dir=cache, progress=False)


@pytest.mark.skipif(
    not hasattr(errors, "IncompleteSnapshotError"), reason="huggingface_hub without tree cache"
)
def test_download_incomplete_snapshot(cache: Path, offline: None) -> None:
    """huggingface_hub (>= 2) records the repo's file list in trees/<commit>.json; a cached
    snapshot missing one of those files is reported, not returned half-empty."""
    import json

    rng = np.random.default_rng(8)
    commit = random_commit(rng)
    snap = make_snapshot(cache, REPO, commit, {"config.json": b"{}"})
    trees = snap.parent.parent / "trees"
    trees.mkdir()
    listing = {
        "config.json": {"size": 2, "blob_id": "a" * 40},
        "model.safetensors": {"size": 10, "blob_id": "b" * 40},
    }
    (trees / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    with pytest.raises(HubError) as ei:
        hub.download(REPO, cache_dir=cache, progress=False)
    assert "incomplete" in str(ei.value) and "model.safetensors" in str(ei.value)
    # The complete part is still usable.
    assert hub.download(REPO, cache_dir=cache, allow_patterns=["*.json"], progress=False) == snap


# ----------------------------------------------------------------------------------------------
# resolve_checkpoint


def test_resolve_checkpoint_local_dir(tmp_path: Path, offline: None) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    assert hub.resolve_checkpoint(d) == d
    assert hub.resolve_checkpoint(str(d)) == d
    with pytest.raises(ValueError, match="revision"):
        hub.resolve_checkpoint(d, revision="main")


def test_resolve_checkpoint_repo_id(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(9)
    files = checkpoint_files(rng)
    snap = make_snapshot(cache, REPO, random_commit(rng), files)
    got = hub.resolve_checkpoint(REPO, cache_dir=cache, progress=False)
    assert got == snap
    assert_files(got, files)


def test_resolve_checkpoint_repo_without_checkpoint_files(cache: Path, offline: None) -> None:
    make_snapshot(cache, REPO, random_commit(np.random.default_rng(10)), {"model.gguf": b"GGUF"})
    with pytest.raises(HubError) as ei:
        hub.resolve_checkpoint(REPO, cache_dir=cache, progress=False)
    assert "config.json" in str(ei.value) and REPO in str(ei.value)


@pytest.mark.parametrize("missing", ["no/such/dir/anywhere", "nonexistent-dir", "./a/b"])
def test_resolve_checkpoint_missing_path(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as ei:
        hub.resolve_checkpoint(missing)
    assert not isinstance(ei.value, HubError)
    assert missing in str(ei.value)


def test_resolve_checkpoint_file_is_not_a_checkpoint(tmp_path: Path, offline: None) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        hub.resolve_checkpoint(f)


def test_resolve_checkpoint_prefers_existing_local_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert hub.resolve_checkpoint("owner/name") == Path("owner/name")


# ----------------------------------------------------------------------------------------------
# resolve_gguf


def test_resolve_gguf_local_file(tmp_path: Path, offline: None) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert hub.resolve_gguf(f) == f
    assert hub.resolve_gguf(str(f)) == f
    with pytest.raises(ValueError, match="revision"):
        hub.resolve_gguf(f, revision="dev")
    with pytest.raises(IsADirectoryError, match="m.gguf"):
        hub.resolve_gguf(tmp_path)


def test_resolve_gguf_single_in_repo(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(11)
    data = random_bytes(rng, 1234)
    files = {"config.json": b"{}", "sub/model-i2_s.gguf": data}
    snap = make_snapshot(cache, REPO, random_commit(rng), files)
    got = hub.resolve_gguf(REPO, cache_dir=cache, progress=False)
    assert got == snap / "sub" / "model-i2_s.gguf"
    assert got.read_bytes() == data


def test_resolve_gguf_several_in_repo_lists_them(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(12)
    files = {"a-tq1_0.gguf": b"1", "b-tq2_0.gguf": b"2", "sub/c.gguf": b"3", "x.txt": b"4"}
    make_snapshot(cache, REPO, random_commit(rng), files)
    with pytest.raises(HubError) as ei:
        hub.resolve_gguf(REPO, cache_dir=cache, progress=False)
    msg = str(ei.value)
    for name in ("a-tq1_0.gguf", "b-tq2_0.gguf", "sub/c.gguf"):
        assert f"{REPO}/{name}" in msg
    assert "x.txt" not in msg
    assert "3 .gguf files" in msg and "name one" in msg


def test_resolve_gguf_file_inside_repo(cache: Path, offline: None) -> None:
    rng = np.random.default_rng(13)
    c_main, c_dev = random_commit(rng), random_commit(rng)
    f_main = {"a.gguf": random_bytes(rng, 100), "sub/b.gguf": random_bytes(rng, 77)}
    f_dev = {"sub/b.gguf": random_bytes(rng, 50)}
    s_main = make_snapshot(cache, REPO, c_main, f_main)
    s_dev = make_snapshot(cache, REPO, c_dev, f_dev, refs=("dev",))
    got = hub.resolve_gguf(f"{REPO}/sub/b.gguf", cache_dir=cache, progress=False)
    assert got == s_main / "sub" / "b.gguf"
    assert got.read_bytes() == f_main["sub/b.gguf"]
    got = hub.resolve_gguf(f"{REPO}/sub/b.gguf", revision="dev", cache_dir=cache, progress=False)
    assert got == s_dev / "sub" / "b.gguf"
    assert got.read_bytes() == f_dev["sub/b.gguf"]
    assert hub.resolve_gguf(REPO, revision="dev", cache_dir=cache, progress=False) == got

    with pytest.raises(HubError) as ei:
        hub.resolve_gguf(f"{REPO}/nope.gguf", cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert "offline" in msg and "'nope.gguf'" in msg and f"'{REPO}'" in msg
    with pytest.raises(HubError, match="offline"):
        hub.resolve_gguf("owner/absent/m.gguf", cache_dir=cache, progress=False)


def test_resolve_gguf_repo_without_gguf(cache: Path, offline: None) -> None:
    make_snapshot(cache, REPO, random_commit(np.random.default_rng(14)), {"config.json": b"{}"})
    with pytest.raises(HubError) as ei:
        hub.resolve_gguf(REPO, cache_dir=cache, progress=False)
    assert "no .gguf file" in str(ei.value) and REPO in str(ei.value)
    with pytest.raises(HubError, match="offline"):
        hub.resolve_gguf("owner/absent", cache_dir=cache, progress=False)


@pytest.mark.parametrize(
    "missing", ["models/m.gguf", "m.gguf", "/nonexistent/dir/m.gguf", "owner/name/../x.gguf"]
)
def test_resolve_gguf_missing_path(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as ei:
        hub.resolve_gguf(missing)
    assert not isinstance(ei.value, HubError)
    assert missing in str(ei.value)


# ----------------------------------------------------------------------------------------------
# Online paths with huggingface_hub replaced by fakes (its real exception types)


def http_error(cls: type[Exception], status: int, message: str = "server says no") -> Exception:
    response = types.SimpleNamespace(status_code=status, headers={}, request=None)
    return cls(message, response=response)


def transport_error() -> Exception:
    httpx2 = pytest.importorskip("httpx2")
    return httpx2.ConnectError("[Errno 111] Connection refused")


def raising(e: BaseException):
    def fake(*args: object, **kwargs: object) -> None:
        raise e

    return fake


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: http_error(errors.GatedRepoError, 403), ["gated", "huggingface.co/owner/name"]),
        (lambda: http_error(errors.RepositoryNotFoundError, 404), ["not found", "HF_TOKEN"]),
        (lambda: http_error(errors.RevisionNotFoundError, 404), ["revision 'v9'", "does not"]),
        (lambda: http_error(errors.HfHubHTTPError, 401), ["HTTP 401", "hf auth login"]),
        (lambda: http_error(errors.HfHubHTTPError, 503, "busy"), ["HTTP 503", "busy"]),
        (lambda: errors.LocalTokenNotFoundError("no token"), ["hf auth login", "HF_TOKEN"]),
        (lambda: transport_error(), ["could not be reached", "Connection refused"]),
    ],
)
def test_hub_errors_are_mapped(
    make, expected: list[str], cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make()
    monkeypatch.setattr(hh, "snapshot_download", raising(original))
    with pytest.raises(HubError) as ei:
        hub.download(REPO, revision="v9", cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert REPO in msg
    for s in expected:
        assert s in msg, (s, msg)
    assert ei.value.__cause__ is original


def test_connection_failure_not_cached(
    cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub turns a connection error into LocalEntryNotFoundError when the repo is
    not cached; the message says the Hub is unreachable (not 'offline') and names the cause."""
    cause = transport_error()
    e = errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
    e.__cause__ = cause
    monkeypatch.setattr(hh, "snapshot_download", raising(e))
    with pytest.raises(HubError) as ei:
        hub.download(REPO, cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert "could not be reached" in msg and "Connection refused" in msg
    assert str(cache) in msg and "offline" not in msg


def test_unrelated_errors_pass_through(
    cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hh, "snapshot_download", raising(KeyError("bug")))
    with pytest.raises(KeyError):
        hub.download(REPO, cache_dir=cache, progress=False)


def test_online_download_arguments_and_quiet_progress(
    cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(15)
    files = checkpoint_files(rng)
    snap = make_snapshot(cache, REPO, random_commit(rng), files)
    calls: list[dict] = []

    def fake_snapshot_download(**kwargs: object) -> str:
        calls.append(kwargs)
        return str(snap)

    monkeypatch.setattr(hh, "snapshot_download", fake_snapshot_download)
    assert hub.resolve_checkpoint(REPO, revision="r1", cache_dir=cache, progress=False) == snap
    kw = calls[-1]
    assert kw["repo_id"] == REPO and kw["revision"] == "r1" and kw["local_files_only"] is False
    assert Path(kw["cache_dir"]) == cache
    assert set(kw["allow_patterns"]) == {
        "config.json",
        "generation_config.json",
        "*.safetensors",
        "*.safetensors.index.json",
        "*.bin",
        "*.bin.index.json",
        "*.pt",
        "*.pth",
        "*.pt.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "chat_template.jinja",
    }
    bar = kw["tqdm_class"](total=10)
    assert bar.disable
    bar.close()

    assert hub.download(REPO, token="hf_abc", progress=True) == snap
    kw = calls[-1]
    assert kw["token"] == "hf_abc" and kw["cache_dir"] is None and kw["allow_patterns"] is None
    assert "tqdm_class" not in kw


def test_online_resolve_gguf_lists_before_downloading(
    cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = ["README.md", "ggml-model-i2_s.gguf", "sub/ggml-model-tq2_0.gguf"]
    downloads: list[dict] = []

    def fake_list(self: object, repo_id: str, revision: str | None = None, **kw: object):
        assert repo_id == REPO
        return list(listing)

    def fake_hf_hub_download(**kwargs: object) -> str:
        downloads.append(kwargs)
        return str(cache / "fake" / str(kwargs["filename"]))

    monkeypatch.setattr(hh.HfApi, "list_repo_files", fake_list)
    monkeypatch.setattr(hh, "hf_hub_download", fake_hf_hub_download)
    with pytest.raises(HubError) as ei:
        hub.resolve_gguf(REPO, cache_dir=cache, progress=False)
    assert f"{REPO}/ggml-model-i2_s.gguf" in str(ei.value)
    assert f"{REPO}/sub/ggml-model-tq2_0.gguf" in str(ei.value)
    assert downloads == []  # several candidates: nothing fetched

    listing.remove("ggml-model-i2_s.gguf")
    got = hub.resolve_gguf(REPO, revision="r2", cache_dir=cache, progress=False)
    assert got == cache / "fake" / "sub/ggml-model-tq2_0.gguf"
    assert downloads[-1]["filename"] == "sub/ggml-model-tq2_0.gguf"
    assert downloads[-1]["revision"] == "r2" and downloads[-1]["local_files_only"] is False

    monkeypatch.setattr(
        hh.HfApi, "list_repo_files", raising(http_error(errors.GatedRepoError, 403))
    )
    with pytest.raises(HubError, match="gated"):
        hub.resolve_gguf(REPO, cache_dir=cache, progress=False)


def test_online_resolve_gguf_falls_back_to_cache_without_network(
    cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(16)
    data = random_bytes(rng, 300)
    snap = make_snapshot(cache, REPO, random_commit(rng), {"m.gguf": data})
    monkeypatch.setattr(hh.HfApi, "list_repo_files", raising(transport_error()))
    got = hub.resolve_gguf(REPO, cache_dir=cache, progress=False)
    assert got == snap / "m.gguf" and got.read_bytes() == data
    with pytest.raises(HubError) as ei:
        hub.resolve_gguf("owner/absent", cache_dir=cache, progress=False)
    msg = str(ei.value)
    assert "could not be reached" in msg and "Connection refused" in msg
    assert "'owner/absent'" in msg and str(cache) in msg and "offline" not in msg


# ----------------------------------------------------------------------------------------------
# The `download` command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bitnet")
    download_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["download", *argv])


def test_download_command_in_process(
    cache: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(17)
    snap = make_snapshot(cache, REPO, random_commit(rng), checkpoint_files(rng), refs=("dev",))
    args = parse(
        REPO,
        "--revision",
        "dev",
        "--cache-dir",
        str(cache),
        "--quiet",
        "--include",
        "*.json",
        "--include",
        "*.safetensors",
        "sub/",
    )
    assert args.include == ["*.json", "*.safetensors", "sub/"]
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(snap)
    args = parse(REPO, "--cache-dir", str(cache))
    with pytest.raises(HubError, match="offline"):
        args.func(args)


def run_cli(env_update: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "BITNET_DEBUG")
    }
    env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}, **env_update)
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", "download", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_download_cli_prints_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(18)
    home = (tmp_path / "hf-home").resolve()
    cache = home / "hub"
    cache.mkdir(parents=True)
    s_main = make_snapshot(cache, REPO, random_commit(rng), checkpoint_files(rng))
    s_dev = make_snapshot(cache, REPO, random_commit(rng), {"config.json": b"{}"}, refs=("dev",))

    r = run_cli({"HF_HUB_CACHE": str(cache)}, REPO)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).resolve() == s_main

    r = run_cli({"HF_HOME": str(home)}, REPO, "--revision", "dev", "--quiet")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).resolve() == s_dev

    r = run_cli({}, REPO, "--cache-dir", str(cache), "--include", "*.json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).resolve() == s_main


def test_download_cli_error_is_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    r = run_cli({"HF_HUB_CACHE": str(cache)}, "owner/missing")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("bitnet download: error: offline")
    assert "owner/missing" in lines[-1]
    r = run_cli({"HF_HUB_CACHE": str(cache)}, "bad--id/x")
    assert r.returncode == 1 and "invalid Hugging Face repo id" in r.stderr
