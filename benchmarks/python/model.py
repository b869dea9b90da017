"""End-to-end model benchmark on 2B4T-shaped GGUF files (random ternary weights).

For every weight type x head type (files made by make_2b4t_gguf.py when missing), runs
``bitnet bench -m FILE --json`` in a fresh process (so peak RSS is that model's) and reports,
per thread count: decode tokens/s, prefill tokens/s for 128- and 512-token prompts, load time
and peak RSS, against the decode roofline:

    roofline tokens/s = measured read bandwidth / bytes read per generated token

Bytes per token: every BitLinear matrix in the kernel layout K256 (rows x ceil(K / 256) x 64
bytes, the layout all file types are repacked to), the LM head as stored (f16 / q8_0 / q4_0:
the whole [vocab, hidden] matrix is read for every token), the norms, and the KV cache read
at the mean decode position (fp32 K and V: 2 x layers x kv_heads x head_dim x 4 bytes per
position). The bandwidth is ``bitnet._ext.measure_read_bandwidth`` at the same thread count.

    python benchmarks/python/model.py --dir /tmp/2b4t --threads 1 2 --json results.json
    python benchmarks/python/model.py --weight-types i2_s --head-types f16 q4_0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_2b4t_gguf  # noqa: E402

TERNARY = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def bytes_per_token(path: Path, position: float) -> dict[str, float]:
    """Bytes read from memory to generate one token at ``position`` (see the module doc)."""
    from bitnet import gguf

    with gguf.read(path) as f:
        md = f.metadata
        arch = f.architecture
        weights = head = norms = 0
        for t in f.tensors.values():
            kind = t.name.split(".")[-2]
            if kind in TERNARY:
                rows, k = t.shape
                weights += rows * -(-k // 256) * 64
            elif t.name == "output.weight" or (
                t.name == "token_embd.weight" and "output.weight" not in f.tensors
            ):
                head = t.nbytes
            elif t.type == "f32" and len(t.shape) == 1:
                norms += t.nbytes
        layers = md[f"{arch}.block_count"]
        kv_heads = md[f"{arch}.attention.head_count_kv"]
        head_dim = md[f"{arch}.embedding_length"] // md[f"{arch}.attention.head_count"]
    kv = 2 * layers * kv_heads * head_dim * 4 * position
    return {
        "weights": float(weights),
        "head": float(head),
        "norms": float(norms),
        "kv_cache": float(kv),
        "total": float(weights + head + norms + kv),
    }


def _python(code: str, *args: str) -> str:
    """Runs ``code`` in a fresh interpreter; returns its stdout. Heavy work (the bandwidth
    probe's 1 GiB buffer, writing a model) stays out of this process, because Linux carries a
    parent's peak RSS (``ru_maxrss``) into the children it forks, which would inflate the
    benchmarks' peak RSS figures."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def bandwidth(threads: list[int], repeats: int) -> dict[int, float]:
    """Measured read bandwidth (GB/s) per thread count, on a 1 GiB buffer."""
    code = (
        "import sys, json; from bitnet import _ext; "
        "print(json.dumps({t: _ext.measure_read_bandwidth(1 << 30, int(t), int(sys.argv[1])) "
        "for t in sys.argv[2:]}))"
    )
    out = json.loads(_python(code, str(repeats), *map(str, threads)))
    return {int(t): float(v) for t, v in out.items()}


def run_bench(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bitnet.cli", "bench", "-m", str(path), "--json"]
    cmd += ["--prompt-tokens", *map(str, args.prompt_tokens), "--gen-tokens", str(args.gen_tokens)]
    cmd += ["--threads", *map(str, args.threads), "--repetitions", str(args.repetitions)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if r.returncode != 0:
        raise RuntimeError(f"bitnet bench failed on {path}:\n{r.stderr}")
    return json.loads(r.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/bitnet-2b4t"), help="GGUF directory")
    p.add_argument("--weight-types", nargs="+", default=list(make_2b4t_gguf.WEIGHT_TYPES))
    p.add_argument("--head-types", nargs="+", default=["f16", "q8_0", "q4_0"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[128, 512])
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--layers", type=int, default=30, help="shorter models for a quick check")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)

    bw = bandwidth(a.threads, a.repetitions)
    rows = []
    for wt in a.weight_types:
        for ht in a.head_types:
            path = a.dir / f"2b4t-{a.layers}l-{wt}-{ht}.gguf"
            if not path.is_file():
                print(f"writing {path}", file=sys.stderr)
                code = (
                    "import sys; sys.path.insert(0, sys.argv[1]); import make_2b4t_gguf as m; "
                    "m.main(sys.argv[2:])"
                )
                args = [str(path), "--weight-type", wt, "--head-type", ht, "--quiet"]
                _python(code, str(HERE), *args, "--layers", str(a.layers))
            rep = run_bench(path, a)
            per_token = bytes_per_token(path, 1 + a.gen_tokens / 2)
            for r in rep["results"]:
                if not r["test"].startswith("tg"):
                    continue
                roof = bw[r["threads"]] * 1e9 / per_token["total"]
                r["roofline_tokens_per_second"] = roof
                r["pct_roofline"] = 100.0 * r["tokens_per_second"] / roof
            rep["bytes_per_token"] = per_token
            rep["bandwidth_gb_per_s"] = {str(t): v for t, v in bw.items()}
            rows.append(rep)
            print(format_row(rep), flush=True)
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


def format_row(rep: dict[str, Any]) -> str:
    gib = 1024**3
    mb = rep["bytes_per_token"]["total"] / 1e6
    lines = [
        f"{Path(rep['model']).name}: weights {rep['weight_type']}, head {rep['head_type']}, "
        f"file {rep['file_size'] / 1e9:.2f} GB, {mb:.0f} MB read per token, load "
        f"{rep['load_seconds']:.2f} s, peak RSS {rep['peak_rss_bytes'] / gib:.2f} GiB"
    ]
    for r in rep["results"]:
        extra = ""
        if "pct_roofline" in r:
            extra = (
                f"  roofline {r['roofline_tokens_per_second']:.1f} tok/s ({r['pct_roofline']:.0f}%)"
            )
        lines.append(
            f"  {r['threads']} thread(s) {r['test']:<6} {r['tokens_per_second']:8.2f} tok/s{extra}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
