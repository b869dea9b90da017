"""Training benchmark: BitNetForTraining on the bitnet tape vs the same model in PyTorch eager.

For each model config x thread count, times full training steps -- forward, backward, AdamW
step, zero_grad -- of

* **bitnet**: :class:`bitnet.train.BitNetForTraining` on the C++ tape with
  ``bitnet.optim.AdamW`` (``bitnet.set_num_threads(T)``);
* **torch**: the same architecture written here in plain PyTorch (the formulas of
  ``BitNetForTraining.forward``: BitLinear with the straight-through estimator as the detach
  trick, RMSNorm, NEOX RoPE from cached tables, ``F.scaled_dot_product_attention`` (causal, GQA),
  relu2-gated FFN with a sub-norm, tied fp32 head, ``F.cross_entropy``) with
  ``torch.optim.AdamW`` (torch's default implementation unless ``--torch-adamw``), and
  ``torch.set_num_threads(T)``.

Both start from the same weights (``BitNetForTraining``'s seeded init) and see the same random
token batches. Every (config, threads, framework) case runs ``--runs`` times, each in a fresh
interpreter (the frameworks alternate, so a change in the machine's load hits both): ``--warmup``
untimed steps, then ``--steps`` timed steps. A run reports the median of its step times; the
table shows the median over the runs of those medians (with ``--runs 1``: the median step), the
fastest and slowest single timed step of all runs, and tokens/s = ``B * T / median step time``.

Memory, the same measure for both frameworks: ``VmHWM`` (peak resident set of the worker
process, read from ``/proc/self/status``; the worker is a fresh ``exec`` so nothing of the parent
is counted) and its growth over the RSS after the imports (``peak - base``: model, gradients,
optimizer state, activations, allocator caches). For bitnet it also reports the tape pool's peak
(``bitnet.autograd.pool_stats()["peak"]``: parameters, gradients and activations) plus AdamW's
state (``m`` and ``v``, 8 bytes per parameter, held outside the pool).

Before timing, a check runs once per config (in its own process, on a batch of at most 2 x 128
tokens): both frameworks' loss on the same batch from the same weights, and again after one
AdamW step; with ``tests/train_reference.py`` present (a source checkout) its independent
reference model is evaluated too. The differences are printed, nothing is asserted.

    python benchmarks/python/train.py                        # tiny and 100m, 1 and 2 threads
    python benchmarks/python/train.py --configs tiny --threads 2 --runs 5 --json train.json
    python benchmarks/python/train.py --configs 100m --batch-size 4 --seq-len 256 --steps 2
    # from a dev tree: PYTHONPATH=build/<name>/pkg python benchmarks/python/train.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

CONFIGS: dict[str, dict[str, Any]] = {
    # `bitnet train --preset tiny` with its default 4096-token BPE vocabulary.
    "tiny": dict(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    # ~100M parameters (100.1M: 24.6M tied embedding + 12 x 6.29M), GPT-2-small-like widths,
    # GQA 12/4 heads of 64 like BitNet b1.58 2B4T's 4:1 ratio, a LLaMA-sized vocabulary.
    "100m": dict(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
    ),
}
"""Benchmark configs: :class:`~bitnet.train.TrainModelConfig` fields (defaults otherwise:
relu2, tied head, rope_theta 10000, eps 1e-5)."""

SHAPES = {"tiny": (8, 256), "100m": (4, 256)}
"""Default batch ``(B, T)`` per config."""

STEPS = {"tiny": (3, 10), "100m": (1, 1)}
"""Default ``(warmup, timed)`` steps per run, per config."""

FRAMEWORKS = ("bitnet", "torch")
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.95), 1e-8, 0.1


# ---------------------------------------------------------------------------- helpers
def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); 0 where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _batches(vocab: int, B: int, T: int, n: int, seed: int) -> list[tuple[Any, Any]]:
    """``n`` random (ids, targets) int64 batches ``[B, T]`` (targets = ids shifted by one)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        seq = rng.integers(0, vocab, size=(B, T + 1), dtype=np.int64)
        out.append((np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:])))
    return out


def _train_config(name: str) -> Any:
    from bitnet.train import TrainModelConfig

    return TrainModelConfig(**CONFIGS[name], max_position_embeddings=4096)


def _init_arrays(cfg: Any, seed: int) -> Any:
    """Yields ``(name, array)`` of ``BitNetForTraining(cfg, seed)``'s initial weights one at a
    time (the same draws from ``numpy.random.default_rng(seed)`` in ``param_shapes`` order), so
    the torch side never holds a second copy of the model."""
    import numpy as np

    from bitnet.train import BitNetForTraining

    shell = object.__new__(BitNetForTraining)  # param_shapes only reads .config
    shell.config = cfg
    rng = np.random.default_rng(seed)
    for name, shape in BitNetForTraining.param_shapes(shell).items():
        if len(shape) == 2:
            yield name, rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        else:
            yield name, np.ones(shape, np.float32)


# ---------------------------------------------------------------------------- torch model
def build_torch_model(cfg: Any, seed: int) -> Any:
    """The PyTorch eager model of ``cfg`` (parameter names = transformers' BitNetForCausalLM
    state dict) with ``BitNetForTraining(cfg, seed)``'s initial weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    H, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    eps, theta = cfg.rms_norm_eps, cfg.rope_theta
    rope_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def rope_tables(T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if T not in rope_cache:
            inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
            ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
            ang = torch.cat((ang, ang), dim=-1)
            # [1, T, 1, D] to broadcast over [B, T, H, D]
            rope_cache[T] = (ang.cos().float()[None, :, None], ang.sin().float()[None, :, None])
        return rope_cache[T]

    def rope(x: torch.Tensor) -> torch.Tensor:  # x [B, T, H, D], NEOX pairs (i, i + D/2)
        cos, sin = rope_tables(x.shape[1])
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    class BitLinear(nn.Module):
        """Bias-free ``[out, in]`` BitLinear, STE: ``x + lam (aq(x) - x).detach()`` times
        ``(w + lam (wq(w) - w).detach())^T``."""

        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_out, n_in))

        def forward(self, x: torch.Tensor, lam: float) -> torch.Tensor:
            w = self.weight
            with torch.no_grad():
                xd, wd = x.detach(), w.detach()
                s = 127.0 / xd.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
                dx = (xd * s).round_().clamp_(-128, 127).div_(s).sub_(xd)
                sw = wd.abs().mean().clamp(min=1e-5)
                dw = (wd / sw).round_().clamp_(-1, 1).mul_(sw).sub_(wd)
                if lam != 1.0:
                    dx.mul_(lam)
                    dw.mul_(lam)
            return F.linear(x + dx, w + dw)

    class RMSNorm(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.rms_norm(x, (x.shape[-1],), self.weight, eps)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h = cfg.hidden_size
            self.q_proj = BitLinear(h, H * D)
            self.k_proj = BitLinear(h, Hkv * D)
            self.v_proj = BitLinear(h, Hkv * D)
            self.o_proj = BitLinear(H * D, h)
            self.attn_sub_norm = RMSNorm(h)

        def forward(self, x: torch.Tensor, B: int, T: int, lam: float) -> torch.Tensor:
            q = rope(self.q_proj(x, lam).view(B, T, H, D)).transpose(1, 2)
            k = rope(self.k_proj(x, lam).view(B, T, Hkv, D)).transpose(1, 2)
            v = self.v_proj(x, lam).view(B, T, Hkv, D).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hkv != H)
            a = a.transpose(1, 2).reshape(B * T, H * D)
            return self.o_proj(self.attn_sub_norm(a), lam)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h, f = cfg.hidden_size, cfg.intermediate_size
            self.gate_proj = BitLinear(h, f)
            self.up_proj = BitLinear(h, f)
            self.down_proj = BitLinear(f, h)
            self.ffn_sub_norm = RMSNorm(f)

        def forward(self, x: torch.Tensor, lam: float) -> torch.Tensor:
            g = self.gate_proj(x, lam)
            g = torch.relu(g).square() if cfg.hidden_act == "relu2" else F.silu(g)
            return self.down_proj(self.ffn_sub_norm(g * self.up_proj(x, lam)), lam)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = RMSNorm(cfg.hidden_size)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(cfg.hidden_size)
            self.mlp = MLP()

        def forward(self, x: torch.Tensor, B: int, T: int, lam: float) -> torch.Tensor:
            x = x + self.self_attn(self.input_layernorm(x), B, T, lam)
            return x + self.mlp(self.post_attention_layernorm(x), lam)

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.num_hidden_layers))
            self.norm = RMSNorm(cfg.hidden_size)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Decoder()
            self.lm_head = (
                None
                if cfg.tie_word_embeddings
                else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            )
            self.lambda_ = 1.0

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            B, T = ids.shape
            x = self.model.embed_tokens(ids.reshape(-1))
            for layer in self.model.layers:
                x = layer(x, B, T, self.lambda_)
            x = self.model.norm(x)
            head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
            return F.linear(x, head)

        def loss(self, ids: Any, targets: Any) -> torch.Tensor:
            logits = self.forward(torch.from_numpy(ids))
            return F.cross_entropy(logits, torch.from_numpy(targets).reshape(-1))

    with torch.device("meta"):
        model = Model()
    model = model.to_empty(device="cpu")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in _init_arrays(cfg, seed):
            params[name].copy_(torch.from_numpy(arr))
    return model


def torch_optimizer(model: Any, impl: str) -> Any:
    """``torch.optim.AdamW`` with weight decay on matrices only (BitNetForTraining.decay_mask)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim == 2]
    keep = [p for p in model.parameters() if p.ndim != 2]
    kw: dict[str, Any] = {}
    if impl == "foreach":
        kw["foreach"] = True
    elif impl == "fused":
        kw["fused"] = True
    elif impl == "loop":
        kw["foreach"] = False
    groups = [{"params": decay, "weight_decay": WD}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, **kw)


# ---------------------------------------------------------------------------- workers
def _worker_bitnet(spec: dict[str, Any]) -> dict[str, Any]:
    import bitnet
    from bitnet import autograd as ag
    from bitnet import optim
    from bitnet.train import BitNetForTraining

    cfg = _train_config(spec["config"])
    B, T = spec["batch_size"], spec["seq_len"]
    data = _batches(cfg.vocab_size, B, T, spec["warmup"] + spec["steps"], spec["seed"])
    bitnet.set_num_threads(spec["threads"])
    base_kb = _status_kb("VmRSS")
    model = BitNetForTraining(cfg, seed=0)
    opt = optim.AdamW(
        model.parameters(),
        lr=LR,
        betas=BETAS,
        eps=EPS,
        weight_decay=WD,
        decay_mask=model.decay_mask(),
    )
    ag.reset_peak()
    times, losses = [], []
    for i, (x, y) in enumerate(data):
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        ag.backward(loss)
        opt.step()
        opt.zero_grad()
        dt = time.perf_counter() - t0
        losses.append(float(loss.item()))
        if i >= spec["warmup"]:
            times.append(dt)
    n = model.num_parameters()
    return {
        "step_times_s": times,
        "losses": losses,
        "parameters": n,
        "base_rss_bytes": base_kb * 1024,
        "peak_rss_bytes": _status_kb("VmHWM") * 1024,
        "pool_peak_bytes": int(ag.pool_stats()["peak"]),
        "optimizer_state_bytes": 8 * n,
        "threads_used": bitnet.get_num_threads(),
    }


def _worker_torch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    cfg = _train_config(spec["config"])
    B, T = spec["batch_size"], spec["seq_len"]
    data = _batches(cfg.vocab_size, B, T, spec["warmup"] + spec["steps"], spec["seed"])
    base_kb = _status_kb("VmRSS")
    model = build_torch_model(cfg, seed=0)
    opt = torch_optimizer(model, spec["torch_adamw"])
    times, losses = [], []
    for i, (x, y) in enumerate(data):
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        dt = time.perf_counter() - t0
        losses.append(float(loss.item()))
        if i >= spec["warmup"]:
            times.append(dt)
    return {
        "step_times_s": times,
        "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()),
        "base_rss_bytes": base_kb * 1024,
        "peak_rss_bytes": _status_kb("VmHWM") * 1024,
        "threads_used": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def _worker_check(spec: dict[str, Any]) -> dict[str, Any]:
    """Loss of both frameworks (and tests/train_reference.py's model when present) on the same
    batch from the same weights, before and after one AdamW step on that batch."""
    import numpy as np
    import torch

    import bitnet
    from bitnet import autograd as ag
    from bitnet import optim
    from bitnet.train import BitNetForTraining

    bitnet.set_num_threads(spec["threads"])
    torch.set_num_threads(spec["threads"])
    cfg = _train_config(spec["config"])
    B, T = min(spec["batch_size"], 2), min(spec["seq_len"], 128)
    (x, y), (x2, y2) = _batches(cfg.vocab_size, B, T, 2, spec["seed"] + 1)
    ours = BitNetForTraining(cfg, seed=0)
    ref = build_torch_model(cfg, seed=0)
    out: dict[str, Any] = {"batch": [B, T]}
    same = all(
        np.array_equal(ours.params[k].numpy(), v.detach().numpy())
        for k, v in ref.named_parameters()
    )
    out["same_initial_weights"] = bool(same and len(ours.params) == len(list(ref.parameters())))

    tests = REPO / "tests"
    if (tests / "train_reference.py").is_file():
        sys.path.insert(0, str(tests))
        try:
            import train_reference

            plain = train_reference.TorchBitNet(cfg, state=ours.state_dict())
            with torch.no_grad():
                out["loss_train_reference"] = float(plain.loss(x, y))
            del plain
        except Exception as e:  # optional cross-check: report, do not fail the benchmark
            out["train_reference_error"] = f"{type(e).__name__}: {e}"

    opt = optim.AdamW(
        ours.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
        decay_mask=ours.decay_mask(),
    )  # fmt: skip
    loss = ours.loss(x, y)
    out["loss_bitnet"] = float(loss.item())
    ag.backward(loss)
    opt.step()
    opt.zero_grad()
    with ag.no_grad():
        out["loss_bitnet_after_step"] = float(ours.loss(x2, y2).item())

    topt = torch_optimizer(ref, "default")
    tloss = ref.loss(x, y)
    out["loss_torch"] = float(tloss)
    tloss.backward()
    topt.step()
    topt.zero_grad()
    with torch.no_grad():
        out["loss_torch_after_step"] = float(ref.loss(x2, y2))
    diffs = [
        float(np.abs(ours.params[k].numpy() - v.detach().numpy()).max())
        for k, v in ref.named_parameters()
    ]
    out["max_abs_weight_diff_after_step"] = max(diffs)
    return out


def _worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = {"bitnet": _worker_bitnet, "torch": _worker_torch, "check": _worker_check}[spec["kind"]]
    print(json.dumps(fn(spec)))
    return 0


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one worker in a fresh interpreter (``exec``: its VmHWM is its own); returns its JSON."""
    env = dict(os.environ)
    # Threads are set through the APIs; keep OpenMP / MKL from spinning extra pools.
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    env["MKL_NUM_THREADS"] = str(spec["threads"])
    env["BITNET_NUM_THREADS"] = str(spec["threads"])
    r = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if r.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- driver
def _machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": model, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        info["loadavg_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _summarize(runs: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    medians = [statistics.median(r["step_times_s"]) for r in runs]
    med = statistics.median(medians)
    s: dict[str, Any] = {
        "step_s_median": med,
        "step_s_run_medians": medians,
        "tokens_per_s": tokens / med,
        "step_s_min": min(min(r["step_times_s"]) for r in runs),
        "step_s_max": max(max(r["step_times_s"]) for r in runs),
        "timed_steps": sum(len(r["step_times_s"]) for r in runs),
        "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in runs),
        "rss_growth_bytes": statistics.median(
            r["peak_rss_bytes"] - r["base_rss_bytes"] for r in runs
        ),
        "parameters": runs[0]["parameters"],
        "threads_used": runs[0]["threads_used"],
        "first_losses": runs[0]["losses"][:3],
    }
    if "pool_peak_bytes" in runs[0]:
        s["pool_peak_bytes"] = statistics.median(r["pool_peak_bytes"] for r in runs)
        s["pool_peak_plus_optimizer_bytes"] = (
            s["pool_peak_bytes"] + runs[0]["optimizer_state_bytes"]
        )
    if "torch_version" in runs[0]:
        s["torch_version"] = runs[0]["torch_version"]
    return s


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`main`'s result rows."""
    head = (
        f"{'config':<6} {'params':>7} {'B x T':>8} {'thr':>3} {'framework':<9} "
        f"{'step ms':>9} {'min..max step ms':>20} {'tok/s':>8} {'vs torch':>8} "
        f"{'peak RSS MiB':>12} {'growth MiB':>10} {'pool+opt MiB':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        torch_tps = next(
            (
                q["tokens_per_s"]
                for q in results
                if q["framework"] == "torch"
                and (q["config"], q["threads"], q["batch_size"], q["seq_len"])
                == (r["config"], r["threads"], r["batch_size"], r["seq_len"])
            ),
            None,
        )
        ratio = f"{r['tokens_per_s'] / torch_tps:.2f}x" if torch_tps else "-"
        lo, hi = r["step_s_min"], r["step_s_max"]
        rng = f"{1e3 * lo:.1f}..{1e3 * hi:.1f}"
        pool = _mib(r["pool_peak_plus_optimizer_bytes"]) if "pool_peak_bytes" in r else "-"
        lines.append(
            f"{r['config']:<6} {r['parameters'] / 1e6:>6.1f}M "
            f"{r['batch_size']:>3}x{r['seq_len']:<4} "
            f"{r['threads']:>3} {r['framework']:<9} {1e3 * r['step_s_median']:>9.1f} {rng:>20} "
            f"{r['tokens_per_s']:>8,.0f} {ratio:>8} {_mib(r['peak_rss_bytes']):>12} "
            f"{_mib(r['rss_growth_bytes']):>10} {pool:>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--batch-size", type=int, default=None, help="B (default: 8 tiny, 4 100m)")
    p.add_argument("--seq-len", type=int, default=None, help="T (default 256)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per run (tiny 3, 100m 1)"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (tiny 10, 100m 1)")
    p.add_argument("--runs", type=int, default=5, help="fresh processes per case (default 5)")
    p.add_argument(
        "--torch-adamw",
        choices=("default", "loop", "foreach", "fused"),
        default="default",
        help="torch.optim.AdamW implementation (default: torch's own choice)",
    )
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--no-check", action="store_true", help="skip the same-loss check")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        return _worker_main(a.worker)

    machine = _machine()
    print(
        f"machine: {machine['cpu']}, {machine['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in machine.get('loadavg_start', []))}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for name in a.configs:
        B = a.batch_size or SHAPES[name][0]
        T = a.seq_len or SHAPES[name][1]
        warmup = STEPS[name][0] if a.warmup is None else a.warmup
        steps = STEPS[name][1] if a.steps is None else a.steps
        base = dict(
            config=name, batch_size=B, seq_len=T, warmup=warmup, steps=steps, seed=a.seed,
            torch_adamw=a.torch_adamw,
        )  # fmt: skip
        if not a.no_check:
            c = _spawn(dict(base, kind="check", threads=max(a.threads)))
            checks[name] = c
            line = (
                f"check {name} (batch {c['batch'][0]}x{c['batch'][1]}, same initial weights: "
                f"{c['same_initial_weights']}): loss bitnet {c['loss_bitnet']:.6f}, torch "
                f"{c['loss_torch']:.6f}"
            )
            if "loss_train_reference" in c:
                line += f", tests/train_reference {c['loss_train_reference']:.6f}"
            line += (
                f"; after one AdamW step: bitnet {c['loss_bitnet_after_step']:.6f}, torch "
                f"{c['loss_torch_after_step']:.6f}, max |w_bitnet - w_torch| "
                f"{c['max_abs_weight_diff_after_step']:.2e}"
            )
            print(line, flush=True)
        for threads in a.threads:
            runs: dict[str, list[dict[str, Any]]] = {f: [] for f in a.frameworks}
            for _ in range(a.runs):
                for fw in a.frameworks:  # alternate, so load changes hit both
                    runs[fw].append(_spawn(dict(base, kind=fw, threads=threads)))
            for fw in a.frameworks:
                row = dict(base, framework=fw, threads=threads, runs=a.runs)
                row.update(_summarize(runs[fw], B * T))
                row["raw"] = runs[fw]
                results.append(row)
            print(
                "\n".join(format_table(results[-len(a.frameworks) :]).splitlines()[2:]),
                flush=True,
            )
    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    print()
    print(format_table(results))
    print(
        "step = forward + backward + AdamW step + zero_grad; median over runs of each run's "
        "median step; peak RSS = worker VmHWM; growth = peak - RSS after imports; pool+opt = "
        "bitnet tape pool peak + AdamW m, v."
    )
    if a.json is not None:
        a.json.write_text(
            json.dumps({"machine": machine, "checks": checks, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
