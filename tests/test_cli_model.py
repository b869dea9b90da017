"""The model commands of the ``bitnet`` CLI (generate, chat, perplexity, bench), run as
subprocesses and compared with the Python API on the same tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import corpus
from tiny_models import PROMPTS, gguf

from bitnet.cli import build_parser
from bitnet.commands import bench as bench_cmd
from bitnet.model import Model


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("BITNET_DEBUG", None)
    env.pop("BITNET_MAX_ISA", None)
    return subprocess.run(
        [sys.executable, "-m", "bitnet.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def path() -> str:
    return str(gguf("i2_s"))


@pytest.fixture(scope="module")
def model(path: str) -> Model:
    return Model.load(path)


def test_generate(path: str, model: Model) -> None:
    r = run_cli(
        "generate", "-m", path, "-p", PROMPTS[0], "--temperature", "0", "--max-new-tokens", "20"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == model.generate(PROMPTS[0], max_new_tokens=20, temperature=0) + "\n"
    flags = ["--seed", "7", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.01"]
    flags += ["--repetition-penalty", "1.2", "--max-new-tokens", "16", "--temperature", "1.1"]
    r = run_cli("generate", "-m", path, "-p", PROMPTS[2], *flags, "-v")
    assert r.returncode == 0, r.stderr
    want = model.generate(
        PROMPTS[2],
        max_new_tokens=16,
        temperature=1.1,
        top_k=20,
        top_p=0.9,
        min_p=0.01,
        repetition_penalty=1.2,
        seed=7,
    )
    assert r.stdout == want + "\n"
    assert "tokens/s" in r.stderr


def test_generate_stop_and_prompt_file(path: str, model: Model, tmp_path: Path) -> None:
    full = model.generate(PROMPTS[1], max_new_tokens=24, temperature=0)
    stop = full[5:7]
    assert stop and full.find(stop) >= 0
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPTS[1], encoding="utf-8")
    args = ["--temperature", "0", "--max-new-tokens", "24", "--stop", "zzz", "--stop", stop]
    r = run_cli("generate", "-m", path, "-f", str(f), *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == full[: full.find(stop)] + "\n"
    r = run_cli("generate", "-m", path, "-f", "-", *args, stdin=PROMPTS[1])
    assert r.stdout == full[: full.find(stop)] + "\n"


def test_generate_errors(path: str, model: Model) -> None:
    r = run_cli("generate", "-m", path, "-p", "")
    assert r.returncode == 1 and r.stderr.strip() == "bitnet generate: error: prompt is empty"
    r = run_cli("generate", "-m", path, "-p", "ka " * 300, "--max-new-tokens", "2")
    assert r.returncode == 1
    assert "more than the context of 128 tokens" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("generate", "-m", path + ".missing", "-p", "x")
    assert r.returncode == 1 and "does not exist" in r.stderr
    for bad in (["--temperature", "-1"], ["--top-p", "0"], ["--top-k", "x"], ["--ctx", "0"]):
        r = run_cli("generate", "-m", path, "-p", "x", *bad)
        assert r.returncode == 2 and bad[0] in r.stderr


def test_chat_piped(path: str, model: Model) -> None:
    """Piped stdin: one message per line, history kept, /reset clears it, /exit quits."""
    opts = dict(max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    a1 = model.chat([{"role": "user", "content": "hello"}], **opts)
    h = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "and then?"},
    ]
    a2 = model.chat(h, **opts)
    a3 = model.chat([{"role": "user", "content": "bit net"}], **opts)
    stdin = "hello\n\nand then?\n/reset\nbit net\n/exit\nnever read\n"
    flags = ["--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed", "11"]
    r = run_cli("chat", "-m", path, *flags, "--max-new-tokens", "12", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{a1}\n{a2}\n{a3}\n"
    assert "history cleared" in r.stderr
    assert a2 != model.chat([{"role": "user", "content": "and then?"}], **opts)  # history mattered


def test_chat_system_and_overflow(path: str, model: Model) -> None:
    sys_msg = {"role": "system", "content": "be brief"}
    want = model.chat([sys_msg, {"role": "user", "content": "hi"}], max_new_tokens=8, temperature=0)
    long_line = "ka " * 300
    stdin = f"{long_line}\nhi\n"  # the first message does not fit: reported, session goes on
    args = ["--system", "be brief", "--temperature", "0", "--max-new-tokens", "8"]
    r = run_cli("chat", "-m", path, *args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"
    assert "more than the context" in r.stderr and "/reset" in r.stderr


def test_perplexity_command(path: str, model: Model, tmp_path: Path) -> None:
    text = " ".join(corpus(4, 48))
    f = tmp_path / "text.txt"
    f.write_text(text, encoding="utf-8")
    r = run_cli("perplexity", "-m", path, str(f), "--json", "--stride", "32")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == len(model.tokenizer.encode(text)) > model.n_ctx  # windowed
    assert (out["n_ctx"], out["stride"]) == (model.n_ctx, 32)
    assert out["perplexity"] == pytest.approx(model.perplexity(text, stride=32), rel=1e-9)
    r = run_cli("perplexity", "-m", path, str(f), "--ctx", "32")
    assert r.returncode == 0, r.stderr
    ppl = Model.load(path, n_ctx=32).perplexity(text)
    assert r.stdout.startswith(f"perplexity: {ppl:.4f} (") and "window 32, stride 16" in r.stdout
    r = run_cli("perplexity", "-m", path, str(tmp_path / "none.txt"))
    assert r.returncode == 1 and "none.txt" in r.stderr


def test_bench_json(path: str) -> None:
    r = run_cli(
        "bench",
        "-m",
        path,
        "--prompt-tokens",
        "8",
        "20",
        "--gen-tokens",
        "5",
        "--threads",
        "1",
        "2",
        "--repetitions",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["model"] == path and rep["weight_type"] == "i2_s" and rep["head_type"] == "f16"
    assert rep["file_size"] == os.path.getsize(path)
    assert rep["n_ctx"] == 20 + 5 + 1
    assert rep["load_seconds"] > 0
    assert rep["peak_rss_bytes"] > rep["file_size"]
    tests = [(row["threads"], row["test"]) for row in rep["results"]]
    assert tests == [(t, n) for t in (1, 2) for n in ("pp8", "pp20", "tg5")]
    for row in rep["results"]:
        assert len(row["runs"]) == 2
        assert row["seconds"] == pytest.approx(
            sorted(row["runs"])[0] / 2 + sorted(row["runs"])[1] / 2
        )
        assert row["tokens_per_second"] == pytest.approx(row["n_tokens"] / row["seconds"])
        assert row["n_tokens"] == int(row["test"][2:])
    r = run_cli(
        "bench", "-m", path, "--prompt-tokens", "8", "--gen-tokens", "2", "--repetitions", "1"
    )
    assert r.returncode == 0, r.stderr
    assert "pp8" in r.stdout and "tg2" in r.stdout and "peak RSS" in r.stdout


def test_bench_arguments(path: str) -> None:
    p = build_parser()
    a = p.parse_args(["bench", "kernels", "--threads", "1", "--json"])
    assert a.func is bench_cmd.run_kernels and a.threads == [1] and a.json
    a = p.parse_args(["bench", "-m", path, "--threads", "2", "--json"])
    assert a.func is bench_cmd.run_model and a.model_threads == [2] and a.model_json
    assert a.prompt_tokens == [128, 512] and a.gen_tokens == 64
    r = run_cli("bench", "-m", path, "--prompt-tokens", "500", "--gen-tokens", "1", "--ctx", "64")
    assert r.returncode == 1 and "needs 500 tokens of context" in r.stderr
