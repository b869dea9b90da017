"""The default model shipped in the package (``bitnet/data/default.gguf``): it exists, loads
offline with its tokenizer, generates seeded text, and is what ``Model.load()`` and the CLI's
model commands use without ``-m``. Quality is not asserted (the file may be a provisional
short-run model); the text must be non-empty and decode."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet
from bitnet.cli import build_parser
from bitnet.model import DEFAULT_MODEL, Model

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "To be, or not to be"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m bitnet.cli ARGS`` with this interpreter's path, offline."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1")
    env.pop("BITNET_DEBUG", None)
    env.pop("BITNET_MAX_ISA", None)
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(threads=2)


def test_packaged_files() -> None:
    assert DEFAULT_MODEL.name == "default.gguf"
    assert DEFAULT_MODEL.parent == Path(bitnet.__file__).parent / "data"
    assert DEFAULT_MODEL.is_file()
    # "A few MB": ternary weights plus a q8_0 / f16 embedding of a few-million-parameter model.
    assert 500_000 < DEFAULT_MODEL.stat().st_size < 16_000_000
    note = (DEFAULT_MODEL.parent / "DEFAULT_MODEL.md").read_text(encoding="utf-8")
    assert "shakespeare" in note.lower() and "make_default_model.py" in note
    assert (ROOT / "scripts" / "make_default_model.py").is_file()


def test_load_default(model: Model) -> None:
    assert model.path == DEFAULT_MODEL
    c = model.config
    assert c.architecture in ("bitnet-b1.58", "bitnet")
    assert (c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.n_ff) == (256, 6, 4, 2, 768)
    assert c.weight_type == "i2_s" and c.tied
    assert c.vocab_size == 4096 and c.n_ctx == c.n_ctx_train >= 256
    # The same file, given explicitly, is the same model.
    assert Model.load(DEFAULT_MODEL).config == c


def test_tokenizer(model: Model) -> None:
    tok = model.tokenizer
    assert tok is not None
    text = "To be, or not to be: that is the question.\nHAMLET. Ay, my lord."
    ids = tok.encode(text, add_bos=False)
    assert 0 < len(ids) < len(text) and all(0 <= i < model.config.vocab_size for i in ids)
    assert tok.decode(ids) == text
    # The BPE tokenizer prepends <|bos|> (id 0) by default.
    assert tok.encode(text)[0] == 0 and tok.encode(text)[1:] == ids
    assert tok.chat_template is not None


def test_generate_seeded(model: Model) -> None:
    a = model.generate(PROMPT, max_new_tokens=24, temperature=0.8, seed=7)
    b = model.generate(PROMPT, max_new_tokens=24, temperature=0.8, seed=7)
    assert isinstance(a, str) and a.strip() and a == b
    g1 = model.generate(PROMPT, max_new_tokens=16, temperature=0)
    g2 = model.generate(PROMPT, max_new_tokens=16, temperature=0)
    assert g1.strip() and g1 == g2
    # The output is text the tokenizer round-trips (no stray bytes of a split character).
    assert model.tokenizer is not None
    assert model.tokenizer.decode(model.tokenizer.encode(a, add_bos=False)) == a
    assert math.isfinite(model.perplexity("Now is the winter of our discontent.\n" * 4))


def test_load_without_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bitnet.model as bm

    monkeypatch.setattr(bm, "DEFAULT_MODEL", tmp_path / "default.gguf")
    with pytest.raises(FileNotFoundError, match="default model .* is missing"):
        Model.load()


def test_cli_generate_without_m(model: Model) -> None:
    r = run_cli("generate", "-p", PROMPT, "--max-new-tokens", "20", "--seed", "3")
    assert r.returncode == 0, r.stderr
    want = model.generate(PROMPT, max_new_tokens=20, seed=3)
    assert r.stdout == want + "\n" and want.strip()
    args = build_parser().parse_args(["generate", "-p", "x"])
    assert args.model is None
    r = run_cli("generate", "--help")
    assert r.returncode == 0 and "default.gguf" in r.stdout


def test_cli_other_commands_without_m(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("O Romeo, Romeo! wherefore art thou Romeo?\n" * 8, encoding="utf-8")
    r = run_cli("perplexity", str(f), "--json", "--ctx", "64")
    assert r.returncode == 0, r.stderr
    assert math.isfinite(json.loads(r.stdout)["perplexity"])
    r = run_cli("chat", "--max-new-tokens", "8", "--seed", "1", stdin="Good morrow.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n")
    r = run_cli(
        "bench", "--prompt-tokens", "8", "--gen-tokens", "2", "--repetitions", "1", "--json"
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert Path(rep["model"]).resolve() == DEFAULT_MODEL.resolve()

    data = tmp_path / "ins.jsonl"
    rows = [{"prompt": "Who art thou?", "response": "A poet, good sir."}] * 2
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = run_cli("finetune", "--data", str(data), "--out", str(tmp_path / "ad"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"adapter: {tmp_path / 'ad'}"
    conf = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert Path(conf["base_model_name_or_path"]).name == "default.gguf"


def _script() -> object:
    spec = importlib.util.spec_from_file_location(
        "make_default_model", ROOT / "scripts" / "make_default_model.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_corpus_cleaning(tmp_path: Path) -> None:
    mod = _script()
    text = "TITLE\r\n\r\n\r\n\r\n\r\nAct I.   \r\nWho's there?\t\n\n\n\n\nEnd"
    assert mod.clean(text) == "TITLE\n\n\nAct I.\nWho's there?\n\n\nEnd\n"  # type: ignore[attr-defined]
    (tmp_path / "b_gut.txt").write_text("B text\n", encoding="utf-8")
    (tmp_path / "a_gut.txt").write_text("A  \n", encoding="utf-8")
    (tmp_path / "a_gut_f.txt").write_text("folio\n", encoding="utf-8")
    works = mod.read_corpus(tmp_path)  # type: ignore[attr-defined]
    assert works == [("a", "A\n"), ("b", "B text\n")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*_gut.txt texts"):
        mod.read_corpus(tmp_path / "empty")  # type: ignore[attr-defined]
