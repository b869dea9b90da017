"""`bitnet convert` (the CLI) and conversion from a Hugging Face repo id (an offline fake cache)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf as ggufpkg
import pytest
from checkpoints import make_bitnet_checkpoint, make_hf_cache
from huggingface_hub import constants

import bitnet
from bitnet import cli
from bitnet.convert import convert, convert_with_report
from bitnet.hub import HubError


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bitnet_checkpoint(tmp_path_factory.mktemp("c") / "tiny-bitnet", layers=1, seed=31)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


@pytest.fixture
def offline_cache(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> Path:
    """The checkpoint as repo "owner/tiny" in a fake HF cache; HF_HUB_OFFLINE=1, HF_HUB_CACHE."""
    cache = tmp_path / "hf-cache"
    make_hf_cache(cache, "owner/tiny", src)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads both variables once, at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_cli_json(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet.cli", "convert", str(src), "-o", str(out)]
        + ["--type", "tq2_0", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["path"] == str(out) and out.is_file()
    assert rep["weight_type"] == "tq2_0" and rep["embed_type"] == "f16"
    assert rep["architecture"] == "BitNetForCausalLM"
    assert rep["output_bytes"] == out.stat().st_size
    assert len(rep["tensors"]) == 1 + 11 + 1
    names = [t.name for t in ggufpkg.GGUFReader(str(out)).tensors]
    assert [t["gguf_name"] for t in rep["tensors"]] == names
    assert "rel.err" not in proc.stderr  # --json: no table


def test_cli_default_output_and_table(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["convert", str(src), "--type", "f16", "--embed-type", "q8_0"]) == 0
    out = tmp_path / "tiny-bitnet-f16.gguf"
    assert out.is_file()
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == "tiny-bitnet-f16.gguf"
    assert "blk.0.attn_q.weight" in captured.err and "q8_0" in captured.err
    md = ggufpkg.GGUFReader(str(out)).fields
    assert md["general.file_type"].contents() == ggufpkg.LlamaFileType.MOSTLY_F16


def test_cli_quiet_prints_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_bitnet_checkpoint(tmp_path / "notok", layers=1, tokenizer=None, seed=32)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["convert", str(d), "--quiet", "--type", "tq1_0"]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "notok-tq1_0.gguf").is_file()
    assert "bitnet convert: warning:" in captured.err and "no tokenizer" in captured.err
    assert "rel.err" not in captured.err


def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c").mkdir()
    assert cli.main(["convert", str(tmp_path / "c"), "-o", str(tmp_path / "x.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitnet convert: error: ")
    assert "config.json not found" in err[0]
    assert not (tmp_path / "x.gguf").exists()


def test_cli_rejects_unknown_type(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", str(src), "--type", "q4_0"])
    assert e.value.code == 2
    assert "invalid choice: 'q4_0'" in capsys.readouterr().err


def test_cli_choices_match_the_api() -> None:
    from bitnet.commands import convert as cmd

    assert cmd.WEIGHT_TYPES == bitnet.convert.WEIGHT_TYPES
    assert cmd.EMBED_TYPES == bitnet.convert.EMBED_TYPES


def test_repo_id_from_offline_cache(offline_cache: Path, src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "from-hub.gguf"
    rep = convert_with_report("owner/tiny", dst, "tq2_0", progress=False, report=False)
    local = convert_with_report(src, tmp_path / "local.gguf", "tq2_0", progress=False, report=False)
    assert Path(rep.source).parent.parent == offline_cache / "models--owner--tiny"
    assert [t.rel_error for t in rep.tensors] == [t.rel_error for t in local.tensors]
    fields = ggufpkg.GGUFReader(str(dst)).fields
    assert fields["general.name"].contents() == "tiny"
    # an explicit cache_dir and revision work too
    other = tmp_path / "other-cache"
    make_hf_cache(other, "owner/tiny2", src, commit="c" * 40)
    out = convert(
        "owner/tiny2",
        tmp_path / "b.gguf",
        "i2_s",
        revision="c" * 40,
        cache_dir=other,
        progress=False,
        report=False,
    )
    assert out.is_file()


def test_repo_id_cli(offline_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["convert", "owner/tiny", "--quiet", "--type", "tq2_0"]) == 0
    assert (tmp_path / "tiny-tq2_0.gguf").is_file()


def test_repo_id_not_cached(offline_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="owner/absent"):
        convert("owner/absent", tmp_path / "x.gguf", progress=False, report=False)
    assert not (tmp_path / "x.gguf").exists()
