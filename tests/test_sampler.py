"""The C++ token sampler (bitnet.sampling) against numpy references written from the formulas.

Two references:

* ``ref_distribution``: the semantics, straight from the definitions (HF transformers' order
  and warpers: penalties -> temperature -> top-k -> top-p (ascending cumulative sum <= 1 - top_p
  removed) -> min-p -> softmax), in float64 with ``np.exp``. The sampler computes in float64 and
  rounds each probability to float32 once, so it must agree to 2 float32 ulps relative
  (rtol 2^-23; the float64 differences, ~1e-15 relative, are far below) and 1e-44 absolute
  (float32 subnormals carry less relative precision).
* ``Replica``: the documented algorithm (sampler.h) step by step with the same float64
  operations, the same portable exp and the same RNG, which must reproduce ``distribution``
  and every drawn token bit for bit.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np
import pytest

from bitnet import _ext
from bitnet.sampling import Sampler, SamplingParams

M64 = 2**64 - 1
VOCABS = (1, 2, 7, 1000, 128256)


# ----------------------------------------------------------------------------- RNG replica
def splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & M64


class Xoshiro:
    """xoshiro256** seeded with four SplitMix64 outputs (Blackman & Vigna's reference code)."""

    def __init__(self, seed: int) -> None:
        self.s = []
        x = seed
        for _ in range(4):
            x, z = splitmix64(x)
            self.s.append(z)

    def next_u64(self) -> int:
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def next_double(self) -> float:
        return (self.next_u64() >> 11) * 2.0**-53


# ----------------------------------------------------------------------------- exp replica
_EXP_C = [float.fromhex(h) for h in (
    "0x1.6124613a86d09p-33", "0x1.1eed8eff8d898p-29", "0x1.ae64567f544e4p-26",
    "0x1.27e4fb7789f5cp-22", "0x1.71de3a556c734p-19", "0x1.a01a01a01a01ap-16",
    "0x1.a01a01a01a01ap-13", "0x1.6c16c16c16c17p-10", "0x1.1111111111111p-7",
    "0x1.5555555555555p-5", "0x1.5555555555555p-3", "0x1p-1", "0x1p0", "0x1p0",
)]  # fmt: skip


def exp_replica(d: np.ndarray) -> np.ndarray:
    """exp_nonpositive of sampler.h in numpy: the same float64 operations in the same order."""
    dc = np.maximum(np.asarray(d, dtype=np.float64), -746.0)
    shift = float.fromhex("0x1.8p52")
    t = dc * float.fromhex("0x1.71547652b82fep+0") + shift
    n = t - shift
    r = (dc - n * float.fromhex("0x1.62e42feep-1")) - n * float.fromhex("0x1.a39ef35793c76p-33")
    p = np.full_like(r, _EXP_C[0])
    for c in _EXP_C[1:]:
        p = p * r + c
    m = np.float64(shift).view(np.uint64) - t.view(np.uint64)
    m1 = m >> np.uint64(1)
    m2 = m - m1
    s1 = ((np.uint64(1023) - m1) << np.uint64(52)).view(np.float64)
    s2 = ((np.uint64(1023) - m2) << np.uint64(52)).view(np.float64)
    return (p * s1) * s2


# ----------------------------------------------------------------------------- references
def f32(v: float) -> float:
    return float(np.float32(v))


def penalized(logits: np.ndarray, history, p: SamplingParams) -> np.ndarray:
    """r: the logits in float64 after the repetition, frequency and presence penalties."""
    r = logits.astype(np.float64)
    h = np.asarray(history, dtype=np.int64)
    n = len(h) if p.penalty_last_n < 0 else min(len(h), p.penalty_last_n)
    rep, freq, pres = f32(p.repetition_penalty), f32(p.frequency_penalty), f32(p.presence_penalty)
    if n == 0 or (rep == 1.0 and freq == 0.0 and pres == 0.0):
        return r
    window = h[len(h) - n :]
    counts = np.bincount(window, minlength=len(r))
    t = np.flatnonzero(counts)
    v = r[t]
    if rep != 1.0:
        v = np.where(v > 0, v / rep, v * rep)
    r[t] = v - (counts[t].astype(np.float64) * freq + pres)
    return r


def draw_order(r: np.ndarray) -> np.ndarray:
    """Finite ids by r descending, then id ascending."""
    ids = np.flatnonzero(r > -np.inf)
    return ids[np.lexsort((ids, -r[ids]))]


def ref_distribution(logits: np.ndarray, history, p: SamplingParams) -> np.ndarray:
    """The sampler's distribution from the definitions (float64, np.exp)."""
    r = penalized(logits, history, p)
    out = np.zeros(len(r))
    if p.temperature <= 0:
        out[int(np.argmax(r))] = 1.0  # argmax: first (lowest) id on ties
        return out
    order = draw_order(r)
    if 0 < p.top_k < len(order):
        order = order[: p.top_k]
    x = r[order] / f32(p.temperature)
    probs = np.exp(x - x[0])
    probs /= probs.sum()
    keep = np.ones(len(order), dtype=bool)
    if p.top_p < 1:
        # HF: sort ascending, cumulative sum, remove where <= 1 - top_p, keep the most likely.
        ascending_cum = np.cumsum(probs[::-1])[::-1]
        keep &= ~(ascending_cum <= 1 - f32(p.top_p))
        keep[0] = True
    if p.min_p > 0:
        sub = np.where(keep, probs, 0.0)
        keep &= sub / sub.sum() >= f32(p.min_p) * (sub.max() / sub.sum())
    w = np.where(keep, probs, 0.0)
    out[order] = w / w.sum()
    return out


class Replica:
    """The documented algorithm of sampler.h, bit for bit, on one (logits, history)."""

    def __init__(self, logits: np.ndarray, history, p: SamplingParams) -> None:
        r = penalized(logits, history, p)
        self.greedy = p.temperature <= 0
        self.V = len(r)
        if self.greedy:
            self.argmax = int(np.argmax(r))
            return
        temp = f32(p.temperature)
        order = draw_order(r)
        if 0 < p.top_k < len(order):
            order = order[: p.top_k]
        x_max = r[order[0]] / temp
        cids = np.sort(order)
        d = r[cids] / temp - x_max
        if p.min_p > 0 and p.top_p >= 1:  # tokens that cannot reach min_p are dropped early
            sel = d >= math.log(f32(p.min_p)) - 1e-6
            cids, d = cids[sel], d[sel]
        w = exp_replica(d)
        k = -d * 256.0
        bucket = np.where(k < 16384, np.floor(np.minimum(k, 16384)), 16384).astype(np.int64)
        self.groups = []  # (members in draw order, their w, mass in id order), buckets ascending
        o = np.lexsort((cids, bucket))
        starts = np.concatenate([[0], np.flatnonzero(np.diff(bucket[o])) + 1, [len(o)]])
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            ids, ws = cids[o[a:b]], w[o[a:b]]
            mass = 0.0
            for v in ws.tolist():  # ids ascend: the mass is the sum in id order
                mass += v
            order_in = np.lexsort((ids, -r[ids]))
            self.groups.append((ids[order_in], ws[order_in].tolist(), mass))
        # top-p: cut group and count
        G = len(self.groups)
        cut_g, cut_q = G, 0
        if p.top_p < 1:
            top_p = f32(p.top_p)
            z = 0.0
            for g in self.groups:
                z += g[2]
            before = 0.0
            for gi, (_ids, ws, mass) in enumerate(self.groups):
                after = before + mass
                if after / z >= top_p:
                    s, q = before, 0
                    while q < len(ws) and s / z < top_p:
                        s += ws[q]
                        q += 1
                    cut_g, cut_q = (gi + 1, 0) if q == len(ws) else (gi, q)
                    break
                before = after
        if p.min_p > 0:  # the first token in draw order with w < min_p (scanned directly)
            min_p = f32(p.min_p)
            for gi in range(min(cut_g + 1, G)):
                limit = len(self.groups[gi][1]) if gi < cut_g else cut_q
                ws = self.groups[gi][1][:limit]
                bad = [q for q, v in enumerate(ws) if v < min_p]
                if bad:
                    cut_g, cut_q = gi, bad[0]
                    break
        W = 0.0
        for gi in range(cut_g):
            W += self.groups[gi][2]
        if cut_q:
            for v in self.groups[cut_g][1][:cut_q]:
                W += v
        self.cut_g, self.cut_q, self.W = cut_g, cut_q, W

        # the kept part of each group and the running masses the draw compares with
        self.kept = []
        self.befores, self.afters = [], []
        before = 0.0
        for gi in range(min(cut_g + 1, G)):
            ids, ws, mass = self.groups[gi]
            n = len(ids) if gi < cut_g else cut_q
            if n == 0:
                continue
            after = W if gi == cut_g else before + mass
            self.kept.append((ids[:n], ws[:n]))
            self.befores.append(before)
            self.afters.append(after)
            before = after

    def distribution(self) -> np.ndarray:
        out = np.zeros(self.V, dtype=np.float32)
        if self.greedy:
            out[self.argmax] = 1
            return out
        for ids, ws in self.kept:
            out[ids] = (np.asarray(ws) / self.W).astype(np.float32)
        return out

    def draw(self, u: float) -> int:
        if self.greedy:
            return self.argmax
        target = u * self.W
        j = bisect.bisect_right(self.afters, target)  # the first group with target < after
        if j < len(self.kept):
            ids, ws = self.kept[j]
            s = self.befores[j]
            for i, v in zip(ids, ws, strict=True):
                s += v
                if target < s:
                    return int(i)
        else:
            j = len(self.kept) - 1
        # rounding fallback: the last token with w > 0 of that group (or of the kept set)
        for ids, ws in self.kept[j::-1]:
            pos = [int(i) for i, v in zip(ids, ws, strict=True) if v > 0]
            if pos:
                return pos[-1]
        raise AssertionError("no positive weight")


# ----------------------------------------------------------------------------- inputs
def make_logits(rng: np.random.Generator, V: int, kind: str) -> np.ndarray:
    x = rng.standard_normal(V) * 3.0
    if kind == "ties":
        x = np.round(x * 2) / 2  # many exactly equal logits
    elif kind == "masked":
        x[rng.random(V) < 0.3] = -np.inf
        x[rng.integers(V)] = rng.standard_normal()  # at least one finite
    elif kind == "one":
        x[:] = -np.inf
        x[rng.integers(V)] = 1.5
    return x.astype(np.float32)


PARAMS = {
    "plain": SamplingParams(),
    "greedy": SamplingParams(temperature=0.0),
    "cold": SamplingParams(temperature=0.05),
    "hot": SamplingParams(temperature=7.5),
    "tiny_t": SamplingParams(temperature=1e-30),
    "huge_t": SamplingParams(temperature=1e30),
    "top_k1": SamplingParams(top_k=1, temperature=0.8),
    "top_k5": SamplingParams(top_k=5, temperature=1.3),
    "top_k_big": SamplingParams(top_k=900, temperature=0.8),
    "top_p": SamplingParams(top_p=0.6, temperature=0.9),
    "top_p_small": SamplingParams(top_p=0.05),
    "min_p": SamplingParams(min_p=0.08),
    "min_p_one": SamplingParams(min_p=1.0, temperature=2.0),
    # a deep top-p cut, a min-p cut before it and draws above both: three bucket groups per call
    "top_p_min_p": SamplingParams(top_p=0.999, min_p=0.2, temperature=6.0),
    "rep": SamplingParams(repetition_penalty=1.7, penalty_last_n=-1),
    "rep_lt1": SamplingParams(repetition_penalty=0.6, penalty_last_n=5),
    "freq_pres": SamplingParams(frequency_penalty=0.7, presence_penalty=-0.4, penalty_last_n=8),
    "window0": SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0, penalty_last_n=0),
    "all": SamplingParams(
        temperature=0.7, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.2,
        frequency_penalty=0.3, presence_penalty=0.2, penalty_last_n=16,
    ),
    "all_no_k": SamplingParams(
        temperature=1.1, top_p=0.8, min_p=0.01, repetition_penalty=1.1, penalty_last_n=-1
    ),
    "greedy_pen": SamplingParams(temperature=-1.0, repetition_penalty=3.0, presence_penalty=2.0),
}  # fmt: skip


def history_for(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """25 ids drawn from 6 (so counts > 1), ending with the two most likely tokens, so that the
    penalties move the head of the distribution for every window."""
    V = len(logits)
    top2 = np.argsort(-logits, kind="stable")[:2]
    base = np.concatenate([top2, rng.integers(0, V, size=4)])
    return np.concatenate([rng.choice(base, size=23), top2[::-1]]).astype(np.int32)


# ----------------------------------------------------------------------------- tests
def test_exp_replica_and_accuracy() -> None:
    rng = np.random.default_rng(1)
    d = np.concatenate(
        [
            -rng.random(20000) * 760.0,
            -rng.random(20000) * 1.0,
            -rng.random(2000) * 1e-12,
            np.array([0.0, -0.0, -745.13, -745.2, -746.0, -746.5, -1e300, -np.inf, -708.4]),
        ]
    )
    ours = _ext.sampler_exp(d)
    np.testing.assert_array_equal(ours.view(np.uint64), exp_replica(d).view(np.uint64))
    ref = np.exp(d)
    normal = ref >= np.finfo(np.float64).tiny
    ulps = np.abs(ours[normal] - ref[normal]) / np.spacing(ref[normal])
    assert ulps.max() <= 4, ulps.max()
    assert np.all(np.abs(ours[~normal] - ref[~normal]) <= 2 * 5e-324)
    assert ours[d == 0].tolist() == [1.0, 1.0] and np.all(ours[d <= -746] == 0)
    assert np.all(ours[d > -745] > 0)
    with pytest.raises(ValueError, match="must be <= 0"):
        _ext.sampler_exp(np.array([1e-300]))


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 7, M64])
def test_rng_matches_replica(seed: int) -> None:
    ours = _ext.SamplerRng(seed)
    ref = Xoshiro(seed)
    assert [ours.next_u64() for _ in range(1000)] == [ref.next_u64() for _ in range(1000)]
    assert [ours.next_double() for _ in range(100)] == [ref.next_double() for _ in range(100)]
    ours.reseed(seed)
    assert ours.next_u64() == Xoshiro(seed).next_u64()


def test_splitmix64_known_answer() -> None:
    # First SplitMix64 output for seed 0 (Vigna's splitmix64.c), as used by the reseed.
    assert splitmix64(0)[1] == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("V", VOCABS)
@pytest.mark.parametrize("kind", ["normal", "ties", "masked", "one"])
def test_distribution_matches_reference(V: int, kind: str) -> None:
    rng = np.random.default_rng(V * 31 + len(kind))
    logits = make_logits(rng, V, kind)
    hist = history_for(rng, logits)
    names = PARAMS if V <= 1000 else ["plain", "greedy", "top_p", "min_p", "all", "all_no_k"]
    names = [*names, "top_p_min_p"] if V > 1000 else names
    for name in names:
        p = PARAMS[name]
        got = Sampler(p, V).distribution(logits, hist)
        assert got.dtype == np.float32 and got.shape == (V,)
        ref = ref_distribution(logits, hist, p)
        np.testing.assert_allclose(got, ref, rtol=2**-23, atol=1e-44, err_msg=name)
        np.testing.assert_array_equal(got, Replica(logits, hist, p).distribution(), err_msg=name)
        assert abs(float(got.sum(dtype=np.float64)) - 1.0) < 1e-5


def test_each_processor_changes_the_distribution() -> None:
    # Guards the reference test against vacuous parameters: every processor must matter here.
    rng = np.random.default_rng(3)
    logits = make_logits(rng, 1000, "normal")
    hist = history_for(rng, logits)
    plain = Sampler(PARAMS["plain"], 1000).distribution(logits, hist)
    for name in ("cold", "hot", "top_k5", "top_p", "min_p", "rep", "rep_lt1", "freq_pres"):
        other = Sampler(PARAMS[name], 1000).distribution(logits, hist)
        assert np.abs(other - plain).max() > 1e-4, name
    window0 = Sampler(PARAMS["window0"], 1000).distribution(logits, hist)
    np.testing.assert_array_equal(window0, plain)  # penalty_last_n = 0: no penalty at all


@pytest.mark.parametrize("window", [-1, 0, 1, 3, 10, 1000])
def test_penalty_windows(window: int) -> None:
    rng = np.random.default_rng(window + 10)
    V = 50
    logits = make_logits(rng, V, "normal")
    logits[:5] = [2.0, -1.0, 0.0, 3.0, -2.5]
    hist = np.array([0, 1, 2, 3, 3, 3, 4, 0, 1, 1], dtype=np.int32)
    p = SamplingParams(
        repetition_penalty=1.5, frequency_penalty=0.25, presence_penalty=0.5, penalty_last_n=window
    )
    got = Sampler(p, V).distribution(logits, hist)
    np.testing.assert_allclose(got, ref_distribution(logits, hist, p), rtol=2**-23, atol=1e-44)
    # The formulas by hand for ids 3 (logit 3, three times in the history) and 1 (logit -1,
    # three times, twice in the last three ids).
    r = penalized(logits, hist, p)
    if window in (-1, 10, 1000):
        assert (r[3], r[1]) == (3.0 / 1.5 - (3 * 0.25 + 0.5), -1.0 * 1.5 - (3 * 0.25 + 0.5))
    elif window == 3:
        assert (r[3], r[1]) == (3.0, -1.0 * 1.5 - (2 * 0.25 + 0.5))
    elif window == 1:
        assert (r[3], r[1]) == (3.0, -1.0 * 1.5 - (1 * 0.25 + 0.5))
    else:
        assert (r[3], r[1]) == (3.0, -1.0)


def test_greedy_and_top_k1() -> None:
    rng = np.random.default_rng(5)
    for V in VOCABS:
        for kind in ("normal", "ties", "masked"):
            logits = make_logits(rng, V, kind)
            hist = history_for(rng, logits)
            pen = {"repetition_penalty": 1.4, "presence_penalty": 0.3}
            want = int(np.argmax(penalized(logits, hist, SamplingParams(**pen))))
            assert Sampler(SamplingParams(temperature=0, **pen), V).sample(logits, hist) == want
            for t in (0.01, 1.0, 100.0):
                s = Sampler(SamplingParams(temperature=t, top_k=1, seed=V, **pen), V)
                assert [s.sample(logits, hist) for _ in range(5)] == [want] * 5
    ties = np.array([1.0, 3.0, -2.0, 3.0, 3.0], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0), 5).sample(ties) == 1
    assert Sampler(SamplingParams(top_k=1), 5).sample(ties) == 1
    greedy_ext = _ext.Sampler(SamplingParams(temperature=0)._to_ext(), 5)
    assert greedy_ext.sample_at(ties, np.zeros(0, dtype=np.int32), 0.99) == 1
    zeros = np.array([-1.0, -0.0, 0.0, -3.0], dtype=np.float32)  # -0 == +0: lowest id wins
    assert Sampler(SamplingParams(temperature=0), 4).sample(zeros) == 1


def test_top_k_keeps_exactly_k_lowest_ids_on_ties() -> None:
    logits = np.array([0.0, 2.0, 1.0, 2.0, 1.0, 1.0, -1.0], dtype=np.float32)
    got = Sampler(SamplingParams(top_k=3), 7).distribution(logits)
    assert np.flatnonzero(got).tolist() == [1, 2, 3]
    e = math.exp(-1.0)
    np.testing.assert_allclose(got[[1, 2, 3]], np.array([1, e, 1]) / (2 + e), rtol=2**-23)


@pytest.mark.parametrize(
    "name", ["plain", "top_k5", "top_p", "min_p", "all", "all_no_k", "hot", "top_p_min_p"]
)
@pytest.mark.parametrize("V", [2, 7, 1000, 128256])
def test_draws_match_replica(name: str, V: int) -> None:
    rng = np.random.default_rng(V + len(name))
    logits = make_logits(rng, V, "ties" if V == 1000 else "normal")
    hist = history_for(rng, logits)
    p = dataclasses.replace(PARAMS[name], seed=2024 + V)
    n = 300 if V == 128256 else 1000
    s = Sampler(p, V)
    got = [s.sample(logits, hist) for _ in range(n)]
    rep = Replica(logits, hist, p)
    u = Xoshiro(p.seed)
    assert got == [rep.draw(u.next_double()) for _ in range(n)]


@pytest.mark.parametrize("name", ["plain", "top_p", "all_no_k", "top_p_min_p", "top_k5"])
def test_inverse_cdf_at_chosen_quantiles(name: str) -> None:
    """sample_at(u) (the draw without the RNG) against the replica at u = 0, 1 - 2^-53, every
    group boundary P_g / W and its neighbours, and at targets that fall in the rounding gap
    between a group's in-order sum and P_{g+1} (where the last token with w > 0 is drawn)."""
    rng = np.random.default_rng(29)
    V = 5000
    logits = (rng.standard_normal(V) * 0.3).astype(np.float32)  # flat: big groups
    hist = history_for(rng, logits)
    p = PARAMS[name]
    ext = _ext.Sampler(p._to_ext(), V)
    rep = Replica(logits, hist, p)
    us = [0.0, 2.0**-53, 0.5, 1 - 2.0**-53]
    for after in rep.afters:
        b = after / rep.W
        us += [x for x in (math.nextafter(b, 0), b, math.nextafter(b, 1)) if 0 <= x < 1]
    gaps = 0
    for j, (_ids, ws) in enumerate(rep.kept):
        s = rep.befores[j]
        for v in ws:
            s += v
        u = rep.afters[j] / rep.W
        for _ in range(4):  # the few u just below the boundary
            u = math.nextafter(u, 0)
            if s <= u * rep.W < rep.afters[j] and gaps < 40:
                us.append(u)
                gaps += 1
                break
    if name != "top_k5":
        assert gaps > 0  # the rounding fallback is exercised
    h = np.asarray(hist, dtype=np.int32)
    got = [ext.sample_at(logits, h, u) for u in us]
    assert got == [rep.draw(u) for u in us]
    assert got[0] == int(rep.kept[0][0][0])  # u = 0: the most likely token
    with pytest.raises(ValueError, match="u must be in"):
        ext.sample_at(logits, h, 1.0)


def test_seeded_reproducibility_and_reseed() -> None:
    rng = np.random.default_rng(11)
    V = 1000
    logits = make_logits(rng, V, "normal")
    hist = history_for(rng, logits)
    p = PARAMS["all_no_k"]
    a = Sampler(dataclasses.replace(p, seed=7), V)
    b = Sampler(dataclasses.replace(p, seed=7), V)
    c = Sampler(dataclasses.replace(p, seed=8), V)
    first = [a.sample(logits, hist) for _ in range(1000)]
    assert first == [b.sample(logits, hist) for _ in range(1000)]
    assert first != [c.sample(logits, hist) for _ in range(1000)]
    a.reseed(7)
    assert [a.sample(logits, hist) for _ in range(1000)] == first
    c.reseed(7)
    assert [c.sample(logits, hist) for _ in range(1000)] == first
    # distribution() consumes no randomness; greedy draws none either.
    a.reseed(7)
    a.distribution(logits, hist)
    assert a.sample(logits, hist) == first[0]


def test_empirical_frequencies() -> None:
    """20000 draws against distribution() by Pearson's chi-square test. The p-value comes from
    the regularised upper incomplete gamma function; for a correct sampler it is uniform, so the
    1e-6 threshold fails with probability 1e-6 (and the fixed seed makes the run deterministic).
    """
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    V = 50
    logits = rng.standard_normal(V).astype(np.float32)
    for p in (SamplingParams(seed=99), SamplingParams(top_p=0.9, min_p=0.03, seed=5)):
        s = Sampler(p, V)
        probs = s.distribution(logits).astype(np.float64)
        n = 20000
        counts = np.bincount([s.sample(logits) for _ in range(n)], minlength=V)
        assert counts[probs == 0].sum() == 0  # removed tokens are never drawn
        keep = probs > 0
        expected = n * probs[keep]
        assert expected.min() > 5  # the chi-square approximation holds
        chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
        dof = int(keep.sum()) - 1
        p_value = float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(chi2 / 2)))
        assert p_value > 1e-6, (chi2, dof)
        # and a biased sampler is rejected: shifting 2% of the mass between two tokens
        wrong = probs.copy()
        top, low = np.argsort(-probs)[:2]
        wrong[top] -= 0.02
        wrong[low] += 0.02
        we = n * wrong[keep]
        bad = float(((counts[keep] - we) ** 2 / we).sum())
        bad_p = float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(bad / 2)))
        assert bad_p < 1e-6


def test_matches_transformers_warpers() -> None:
    tf = pytest.importorskip("transformers.generation.logits_process")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(23)
    V = 500
    logits = (rng.standard_normal(V) * 2.5).astype(np.float32)  # no ties
    hist = rng.integers(0, V, size=30).astype(np.int32)
    cases = [
        (SamplingParams(temperature=0.7), [tf.TemperatureLogitsWarper(f32(0.7))]),
        (SamplingParams(top_k=17), [tf.TopKLogitsWarper(17)]),
        (SamplingParams(top_p=0.75), [tf.TopPLogitsWarper(f32(0.75))]),
        (SamplingParams(min_p=0.05), [tf.MinPLogitsWarper(f32(0.05))]),
        (
            SamplingParams(repetition_penalty=1.3, penalty_last_n=-1),
            [tf.RepetitionPenaltyLogitsProcessor(f32(1.3))],
        ),
        (
            SamplingParams(
                temperature=1.4, top_k=60, top_p=0.8, min_p=0.02, repetition_penalty=1.2,
                penalty_last_n=-1,
            ),
            [
                tf.RepetitionPenaltyLogitsProcessor(f32(1.2)),
                tf.TemperatureLogitsWarper(f32(1.4)),
                tf.TopKLogitsWarper(60),
                tf.TopPLogitsWarper(f32(0.8)),
                tf.MinPLogitsWarper(f32(0.02)),
            ],
        ),
    ]  # fmt: skip
    ids = torch.from_numpy(hist.astype(np.int64))[None]
    for p, procs in cases:
        scores = torch.from_numpy(logits.astype(np.float64))[None]
        for proc in procs:
            scores = proc(ids, scores)
        want = torch.softmax(scores, dim=-1)[0].numpy()
        got = Sampler(p, V).distribution(logits, hist)
        np.testing.assert_allclose(got, want, rtol=2**-23, atol=1e-44, err_msg=str(p))


def test_extreme_temperatures() -> None:
    logits = np.array([1.0, 2.0, 2.0, -np.inf, 0.5], dtype=np.float32)
    cold = Sampler(SamplingParams(temperature=1e-30), 5).distribution(logits)
    assert cold.tolist() == [0.0, 0.5, 0.5, 0.0, 0.0]  # ties stay tied, the rest underflows
    hot = Sampler(SamplingParams(temperature=1e30), 5).distribution(logits)
    np.testing.assert_allclose(hot, [0.25, 0.25, 0.25, 0.0, 0.25], rtol=2**-23)
    one = Sampler(SamplingParams(), 1)
    assert one.sample(np.array([3.0], dtype=np.float32)) == 0
    assert one.distribution(np.array([-7.0], dtype=np.float32)).tolist() == [1.0]


def test_top_p_and_min_p_boundaries() -> None:
    # Four equal logits: w = 1 each (exactly), so the mass before token j is exactly j / 4.
    # top-p keeps the tokens whose mass before them is < top_p: 0.5 -> 2 tokens (HF: ascending
    # cumulative 0.25, 0.5, 0.75, 1 and <= 1 - 0.5 removed), 0.75 -> 3, 0.7500001 -> 4.
    flat = np.full(4, 0.5, dtype=np.float32)
    for top_p, kept in ((0.25, 1), (0.5, 2), (0.5000001, 3), (0.75, 3), (0.7500001, 4)):
        got = Sampler(SamplingParams(top_p=top_p), 4).distribution(flat)
        assert got.tolist() == [f32(1 / kept)] * kept + [0.0] * (4 - kept), top_p
    best = Sampler(SamplingParams(top_p=1e-6), 4).distribution(
        flat + np.arange(4, dtype=np.float32)
    )
    assert best.tolist() == [0.0, 0.0, 0.0, 1.0]
    # min-p keeps p >= min_p * p_max, the boundary included: with w exactly 1 for the ties.
    tie = np.array([2.0, 2.0, 1.0], dtype=np.float32)
    minp = Sampler(SamplingParams(min_p=1.0), 3).distribution(tie)
    assert minp.tolist() == [0.5, 0.5, 0.0]


BAD_PARAMS = [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": -0.01}, "min_p"),
    ({"min_p": 1.01}, "min_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"repetition_penalty": -1.0}, "repetition_penalty"),
    ({"frequency_penalty": float("nan")}, "frequency_penalty"),
    ({"presence_penalty": 1e39}, "presence_penalty"),
    ({"penalty_last_n": -2}, "penalty_last_n"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_PARAMS)
def test_bad_params(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)
    ext = _ext.SamplerParams()
    if field in ("seed", "presence_penalty"):
        return  # not representable in the C++ struct: only the Python layer sees them
    for k, v in kwargs.items():
        setattr(ext, k, v)
    with pytest.raises(ValueError, match=field):
        _ext.Sampler(ext, 10)


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="top_k"):
        SamplingParams(top_k=2.5)
    with pytest.raises(ValueError, match="vocab_size"):
        Sampler(SamplingParams(), 0)
    s = Sampler(SamplingParams(), 8)
    g = Sampler(SamplingParams(temperature=0), 8)
    k = Sampler(SamplingParams(top_k=3, repetition_penalty=1.5, penalty_last_n=-1), 8)
    good = np.zeros(8, dtype=np.float32)
    for sampler in (s, g, k):
        with pytest.raises(ValueError, match=r"shape \(8,\)"):
            sampler.sample(np.zeros(7, dtype=np.float32))
        with pytest.raises(ValueError, match=r"shape \(8,\)"):
            sampler.sample(np.zeros((1, 8), dtype=np.float32))
        with pytest.raises(ValueError, match="float32"):
            sampler.sample(np.zeros(8, dtype=np.float64))
        with pytest.raises(TypeError, match="numpy"):
            sampler.sample([0.0] * 8)
        for i, v in ((3, np.nan), (6, np.inf)):
            bad = good.copy()
            bad[i] = v
            with pytest.raises(ValueError, match=rf"logits\[{i}\] is (NaN|\+inf)"):
                sampler.sample(bad)
            with pytest.raises(ValueError, match=rf"logits\[{i}\]"):
                sampler.distribution(bad)
            with pytest.raises(ValueError, match=rf"logits\[{i}\]"):  # a penalised id
                sampler.sample(bad, [i, 0, i])
        with pytest.raises(ValueError, match="every logit is -inf"):
            sampler.sample(np.full(8, -np.inf, dtype=np.float32))
        with pytest.raises(ValueError, match=r"history\[2\] = 8 is not a token id"):
            sampler.sample(good, [1, 2, 8])
        with pytest.raises(ValueError, match=r"history\[1\] = -1"):
            sampler.sample(good, [0, -1])
        with pytest.raises(ValueError, match="history must be 1-D"):
            sampler.sample(good, [[1, 2]])
        with pytest.raises(ValueError, match="integer"):
            sampler.sample(good, [1.5])
    with pytest.raises(TypeError, match="temperature"):
        SamplingParams(temperature="hot")
    with pytest.raises(TypeError, match="seed"):
        SamplingParams(seed=True)
    with pytest.raises(TypeError, match="SamplingParams"):
        Sampler({"temperature": 1.0}, 8)
    with pytest.raises(TypeError, match="vocab_size"):
        Sampler(SamplingParams(), 8.0)
    assert Sampler(None, 3).params == SamplingParams() and SamplingParams(temperature=0).greedy
    # the same checks in the C++ core, below the Python layer
    ext = _ext.Sampler(_ext.SamplerParams(), 8)
    empty = np.zeros(0, dtype=np.int32)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        ext.sample(np.zeros(7, dtype=np.float32), empty)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.sample(np.zeros(16, dtype=np.float32)[::2], empty)
    with pytest.raises(ValueError, match="1-D"):
        ext.sample(good, np.zeros((1, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.sample(good, np.zeros(4, dtype=np.int32)[::2])
    with pytest.raises(ValueError, match="int32"):
        ext.sample(good, np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"history\[0\] = 9"):
        ext.sample(good, np.array([9], dtype=np.int32))
    with pytest.raises(ValueError, match="float32"):
        ext.distribution(np.zeros(8), np.zeros(0, dtype=np.int32))
    # still usable after errors
    assert 0 <= s.sample(good, [1, 2]) < 8
