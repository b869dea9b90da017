// Token sampler (see bitnet/sampler.h for the exact pipeline, order and RNG).
//
// Every pass walks the ids in increasing order: the plain (unpenalised) ids in blocks of
// kBlock = 256 contiguous logits, and the few penalised ids in between, one by one. A block is
// first summarised by a loop the compiler vectorises (maximum through an order-preserving
// integer key, count of NaN / +inf, count of -inf); the per-element scalar work only runs on the
// blocks that can matter. Cost per call for V tokens and a penalty window of n ids:
//   greedy:    one pass over the logits + O(n log n) for the window.
//   top-k (0 < k < #finite): one pass (heap of k; almost every block is skipped by its maximum
//              once the heap is full), then O(k log k) for the k survivors.
//   otherwise: one argmax pass, one pass computing w (vectorised exp) that also sums the mass
//              and counts the tokens of every bucket (1/256 nat of log-probability each), then
//              top-p, min-p and the draw work bucket by bucket: a counting sort (one scatter
//              pass) places the tokens by bucket, and only the buckets where a cut or the drawn
//              token falls are sorted. So the cost stays O(V) however flat the distribution;
//              min-p alone skips every block and token that cannot reach min_p.
#include "bitnet/sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "bitnet/common.h"

namespace bitnet {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr int64_t kBlock = 256;
constexpr uint32_t kPosInfBits = 0x7f800000u;
constexpr uint32_t kNegInfBits = 0xff800000u;

// The draw order: penalised logit r descending, then token id ascending.
inline bool better(double ra, int32_t ia, double rb, int32_t ib) {
  return ra > rb || (ra == rb && ia < ib);
}

// NaN and +inf are the only invalid logits (-inf masks a token). `!(v <= FLT_MAX)` is true for
// exactly those two.
inline bool bad_logit(float v) { return !(v <= FLT_MAX); }

// Bits of v + 0.0f: the addition maps -0 to +0 (round to nearest) and changes nothing else, so
// equal floats get equal bits.
inline uint32_t canonical_bits(float v) {
  const float z = v + 0.0f;
  uint32_t u;
  std::memcpy(&u, &z, sizeof u);
  return u;
}

// Order-preserving key: for non-NaN floats a < b  <=>  key(a) < key(b) (as int32). Negative
// floats get their 31 magnitude bits flipped. The map is its own inverse on the bit pattern.
inline int32_t order_key(uint32_t u) { return static_cast<int32_t>(u ^ ((0u - (u >> 31)) >> 1)); }
inline float key_to_float(int32_t k) {
  const uint32_t s = static_cast<uint32_t>(k);
  const uint32_t u = s ^ ((0u - (s >> 31)) >> 1);
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

struct BlockStat {
  float max;        // largest value (NaN if the block holds a positive NaN: callers then throw)
  int32_t bad;      // count of NaN and +inf
  int32_t neg_inf;  // count of -inf
};

// Summary of l[0, n), n <= kBlock; written so that GCC / Clang vectorise it.
inline BlockStat block_stat(const float* l, int64_t n) {
  int32_t m = std::numeric_limits<int32_t>::min();
  int32_t bad = 0;
  int32_t neg_inf = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = canonical_bits(l[i]);
    const uint32_t a = u & 0x7fffffffu;
    bad += static_cast<int32_t>((a > kPosInfBits) | (u == kPosInfBits));
    neg_inf += static_cast<int32_t>(u == kNegInfBits);
    const int32_t k = order_key(u);
    m = k > m ? k : m;
  }
  return BlockStat{key_to_float(m), bad, neg_inf};
}

uint64_t splitmix64_next(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// exp(d) for d in [-746, 0] (see exp_nonpositive in the header) with IEEE +, -, * only and no
// branch, so that loops over it vectorise (the clamp to -746 is a separate loop: GCC 12 does
// not if-convert it inside this one). Cody-Waite reduction d = n ln2 + r (|r| <= ln2 / 2 +
// tiny), e^r by its Taylor polynomial of degree 13 (truncation < 4e-18 relative), 2^n applied
// as two exact power-of-two factors (n in [-1077, 0]) so that subnormal results round once;
// the integer work is on uint64. exp_core(-746) = 0.84 * 2^-1076 rounds to 0, so with the
// clamp every d <= -746 (and -inf) gives 0.
inline double exp_core(double dc) {
  constexpr double kLog2e = 0x1.71547652b82fep+0;
  constexpr double kShift = 0x1.8p52;         // adding it rounds to an integer held in the low bits
  constexpr double kLn2Hi = 0x1.62e42feep-1;  // 32 significant bits: n * kLn2Hi is exact
  constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
  const double t = dc * kLog2e + kShift;
  const double n = t - kShift;  // round(dc * log2(e)), exact integer in [-1077, 0]
  const double r = (dc - n * kLn2Hi) - n * kLn2Lo;
  double p = 0x1.6124613a86d09p-33;   // 1/13!
  p = p * r + 0x1.1eed8eff8d898p-29;  // 1/12!
  p = p * r + 0x1.ae64567f544e4p-26;  // 1/11!
  p = p * r + 0x1.27e4fb7789f5cp-22;  // 1/10!
  p = p * r + 0x1.71de3a556c734p-19;  // 1/9!
  p = p * r + 0x1.a01a01a01a01ap-16;  // 1/8!
  p = p * r + 0x1.a01a01a01a01ap-13;  // 1/7!
  p = p * r + 0x1.6c16c16c16c17p-10;  // 1/6!
  p = p * r + 0x1.1111111111111p-7;   // 1/5!
  p = p * r + 0x1.5555555555555p-5;   // 1/4!
  p = p * r + 0x1.5555555555555p-3;   // 1/3!
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t tb, sb;
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&sb, &kShift, sizeof sb);
  const uint64_t m = sb - tb;  // -n, in [0, 1077]
  const uint64_t m1 = m >> 1;
  const uint64_t m2 = m - m1;  // m1, m2 <= 539: 2^-m1 and 2^-m2 are normal
  const uint64_t b1 = (uint64_t{1023} - m1) << 52;
  const uint64_t b2 = (uint64_t{1023} - m2) << 52;
  double s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return (p * s1) * s2;
}

inline double clamp_exp_arg(double d) { return d < -746.0 ? -746.0 : d; }
inline double exp_np(double d) { return exp_core(clamp_exp_arg(d)); }

// Buckets: d = x - x_max <= 0 goes to floor(-d * 256), capped at kTailBucket, so bucket b < 16384
// holds exactly the d in (-(b + 1) / 256, -b / 256] (-d * 256 is exact, the truncation too) and
// the tail bucket every d <= -64 (w < 1.7e-28). d is monotone in r (division and subtraction are
// monotone in IEEE arithmetic), so a better token never lands in a later bucket: buckets are
// contiguous ranges of the draw order.
constexpr double kBucketsPerNat = 256.0;
constexpr int32_t kTailBucket = 64 * 256;
constexpr int32_t kBuckets = kTailBucket + 1;

inline int32_t bucket_of(double d) {
  const double k = -d * kBucketsPerNat;  // >= 0
  return k < kTailBucket ? static_cast<int32_t>(k) : kTailBucket;
}

// Candidate counts up to this use a comparison sort to group by bucket, above it a counting sort.
constexpr int64_t kSmallCands = 2048;

}  // namespace

double exp_nonpositive(double d) {
  check_arg(d <= 0.0, "exp_nonpositive: the argument must be <= 0, got ", d);
  return exp_np(d);
}

void Xoshiro256ss::reseed(uint64_t seed) {
  uint64_t x = seed;
  // SplitMix64 is a bijection of its counter, so at most one of the four words is zero and the
  // state is never the (forbidden) all-zero state.
  for (uint64_t& s : s_) s = splitmix64_next(x);
}

uint64_t Xoshiro256ss::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

void validate_sampler_params(const SamplerParams& p) {
  check_arg(std::isfinite(p.temperature),
            "sampler: temperature must be a finite number (<= 0 for greedy), got ", p.temperature);
  check_arg(p.top_k >= 0, "sampler: top_k must be >= 0 (0 = off), got ", p.top_k);
  check_arg(p.top_p > 0.0f && p.top_p <= 1.0f, "sampler: top_p must be in (0, 1] (1 = off), got ",
            p.top_p);
  check_arg(p.min_p >= 0.0f && p.min_p <= 1.0f, "sampler: min_p must be in [0, 1] (0 = off), got ",
            p.min_p);
  check_arg(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f,
            "sampler: repetition_penalty must be finite and > 0 (1 = off), got ",
            p.repetition_penalty);
  check_arg(std::isfinite(p.frequency_penalty),
            "sampler: frequency_penalty must be a finite number, got ", p.frequency_penalty);
  check_arg(std::isfinite(p.presence_penalty),
            "sampler: presence_penalty must be a finite number, got ", p.presence_penalty);
  check_arg(p.penalty_last_n >= -1, "sampler: penalty_last_n must be >= -1 (-1 = all), got ",
            p.penalty_last_n);
}

namespace {
const SamplerParams& checked(const SamplerParams& p, int64_t vocab_size) {
  validate_sampler_params(p);
  check_arg(vocab_size >= 1 && vocab_size <= std::numeric_limits<int32_t>::max(),
            "sampler: vocab_size must be in [1, 2^31 - 1], got ", vocab_size);
  return p;
}
}  // namespace

Sampler::Sampler(const SamplerParams& p, int64_t vocab_size)
    : p_(checked(p, vocab_size)),
      vocab_(vocab_size),
      penalties_on_(p.penalty_last_n != 0 &&
                    (p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f ||
                     p.presence_penalty != 0.0f)),
      rng_(p.seed) {
  if (penalties_on_) {
    counts_.assign(static_cast<size_t>(vocab_), 0);
    // At most min(window, V) distinct ids per call: reserving that here means no call allocates.
    const int64_t cap =
        p_.penalty_last_n < 0 ? vocab_ : std::min<int64_t>(vocab_, p_.penalty_last_n);
    penal_.reserve(static_cast<size_t>(cap));
  }
  if (p_.temperature > 0.0f) {
    const auto v = static_cast<size_t>(vocab_);
    heap_.resize(std::min<size_t>(v, static_cast<size_t>(std::max(p_.top_k, 1))));
    cands_.resize(v);
    layout_.resize(v);
    groups_.reserve(std::min<size_t>(v, kBuckets));
    bucket_count_.resize(kBuckets);
    bucket_mass_.resize(kBuckets);
  }
}

void Sampler::reseed(uint64_t seed) { rng_.reseed(seed); }

void Sampler::check_history(const int32_t* history, int64_t n_history) const {
  check_arg(n_history >= 0, "sampler: history length must be >= 0, got ", n_history);
  check_arg(n_history <= std::numeric_limits<int32_t>::max(), "sampler: history has ", n_history,
            " ids, more than 2^31 - 1");
  check_arg(n_history == 0 || history != nullptr, "sampler: history is null but its length is ",
            n_history);
  for (int64_t i = 0; i < n_history; ++i) {
    const int32_t t = history[i];
    check_arg(t >= 0 && t < vocab_, "sampler: history[", i, "] = ", t,
              " is not a token id of the vocabulary [0, ", vocab_, ")");
  }
}

// Fills penal_ with (id, penalised logit r), sorted by id, for every distinct id of the penalty
// window. counts_ is zero again on return (it is only touched here, and nothing here throws).
void Sampler::collect_penalties(const float* logits, const int32_t* history, int64_t n_history) {
  penal_.clear();
  if (!penalties_on_) return;
  const int64_t n_win =
      p_.penalty_last_n < 0 ? n_history : std::min<int64_t>(n_history, p_.penalty_last_n);
  const int32_t* win = history + (n_history - n_win);
  for (int64_t i = 0; i < n_win; ++i) {
    if (counts_[win[i]]++ == 0) penal_.emplace_back(win[i], 0.0);
  }
  const double rep = p_.repetition_penalty;
  const double freq = p_.frequency_penalty;
  const double pres = p_.presence_penalty;
  for (auto& e : penal_) {
    // 1 <= c <= n_win < 2^31 (check_history bounds the history), so int32 counts cannot
    // overflow and |c * freq| < 2^31 * FLT_MAX < 2^159 is finite in float64. A NaN logit gives
    // a NaN r here; the scans report it by index.
    const int32_t c = counts_[e.first];
    double r = logits[e.first];
    if (rep != 1.0) r = r > 0.0 ? r / rep : r * rep;
    r = r - (static_cast<double>(c) * freq + pres);
    e.second = r;
    counts_[e.first] = 0;
  }
  std::sort(penal_.begin(), penal_.end(),
            [](const std::pair<int32_t, double>& a, const std::pair<int32_t, double>& b) {
              return a.first < b.first;
            });
}

// Calls plain(a, b) for every block [a, b) (b - a <= kBlock) of unpenalised ids and pen(id, r)
// for every penalised id, all in increasing id order.
template <class Plain, class Pen>
void Sampler::walk_ids(Plain&& plain, Pen&& pen) const {
  auto blocks = [&](int64_t a, int64_t b) {
    for (int64_t s = a; s < b; s += kBlock) plain(s, std::min(b, s + kBlock));
  };
  int64_t prev = 0;
  for (const auto& e : penal_) {
    blocks(prev, e.first);
    pen(static_cast<int64_t>(e.first), e.second);
    prev = static_cast<int64_t>(e.first) + 1;
  }
  blocks(prev, vocab_);
}

void Sampler::throw_bad_logit(const float* logits) const {
  for (int64_t i = 0; i < vocab_; ++i) {
    if (std::isnan(logits[i]))
      throw std::invalid_argument(str_cat("sampler: logits[", i, "] is NaN"));
    if (bad_logit(logits[i]))
      throw std::invalid_argument(
          str_cat("sampler: logits[", i, "] is +inf (only -inf may be used to mask a token)"));
  }
  throw std::logic_error("sampler: throw_bad_logit found no bad logit");
}

// Argmax of the penalised logits r (ties: lowest id) in one pass, validating every logit.
// Stores the maximum r in *r_best.
int32_t Sampler::greedy(const float* logits, double* r_best) {
  double best = kNegInf;
  int64_t best_id = -1;
  int64_t n_bad = 0;
  walk_ids(
      [&](int64_t a, int64_t b) {
        const BlockStat st = block_stat(logits + a, b - a);
        n_bad += st.bad;
        // Ids arrive in increasing order: a strict comparison keeps the lowest id on ties, and
        // inside the block the first element equal to the maximum is the lowest such id.
        if (static_cast<double>(st.max) > best) {
          const uint32_t want = canonical_bits(st.max);
          int64_t i = a;
          while (canonical_bits(logits[i]) != want) ++i;
          best = st.max;
          best_id = i;
        }
      },
      [&](int64_t t, double r) {
        n_bad += bad_logit(logits[t]);
        if (r > best) {
          best = r;
          best_id = t;
        }
      });
  if (n_bad != 0) throw_bad_logit(logits);
  check_arg(best_id >= 0, "sampler: every logit is -inf (all ", vocab_, " tokens are masked)");
  *r_best = best;
  return static_cast<int32_t>(best_id);
}

// Top-k selection in one pass: heap_[0, hn) is a heap whose front is the worst of the k best so
// far. Returns false when there are at most k finite tokens (top-k truncates nothing). On
// success cands_[0, k) holds the k best in id order, with w and bucket, and groups_ is built.
bool Sampler::select_top_k(const float* logits) {
  const int64_t k = p_.top_k;
  Cand* h = heap_.data();
  auto cmp = [](const Cand& x, const Cand& y) { return better(x.r, x.id, y.r, y.id); };
  int64_t hn = 0;
  int64_t n_bad = 0;
  int64_t n_finite = 0;
  auto offer = [&](double r, int64_t id) {
    const auto i32 = static_cast<int32_t>(id);
    if (hn < k) {
      h[hn++] = Cand{r, 0.0, i32, 0};
      std::push_heap(h, h + hn, cmp);
    } else if (better(r, i32, h[0].r, h[0].id)) {
      std::pop_heap(h, h + k, cmp);
      h[k - 1] = Cand{r, 0.0, i32, 0};
      std::push_heap(h, h + k, cmp);
    }
  };
  walk_ids(
      [&](int64_t a, int64_t b) {
        const BlockStat st = block_stat(logits + a, b - a);
        n_bad += st.bad;
        n_finite += (b - a) - st.bad - st.neg_inf;
        if (st.bad != 0) return;  // reported after the pass
        // Later ids are never better on a tie, so a block whose maximum is not above the
        // front cannot contribute.
        if (hn == k && !(static_cast<double>(st.max) > h[0].r)) return;
        for (int64_t i = a; i < b; ++i) {
          const float v = logits[i];
          if (v != -std::numeric_limits<float>::infinity()) offer(v, i);
        }
      },
      [&](int64_t t, double r) {
        if (bad_logit(logits[t])) {
          ++n_bad;
          return;
        }
        if (r == kNegInf) return;
        ++n_finite;
        offer(r, t);
      });
  if (n_bad != 0) throw_bad_logit(logits);
  check_arg(n_finite > 0, "sampler: every logit is -inf (all ", vocab_, " tokens are masked)");
  if (n_finite <= k) return false;
  // The front of a max-heap under "worse" is the worst; the best is found by a scan.
  double r_max = kNegInf;
  for (int64_t j = 0; j < k; ++j) r_max = std::max(r_max, h[j].r);
  const double temp = p_.temperature;
  const double x_max = r_max / temp;
  Cand* c = cands_.data();
  std::copy(h, h + k, c);
  std::sort(c, c + k, [](const Cand& x, const Cand& y) { return x.id < y.id; });
  for (int64_t j = 0; j < k; ++j) {
    const double d = c[j].r / temp - x_max;
    c[j].w = exp_np(d);
    c[j].bucket = bucket_of(d);
  }
  n_cand_ = k;
  group_by_sort();
  return true;
}

// Every finite token becomes a candidate (cands_, in id order) with w = exp(d), d = r / T - x_max,
// and its bucket, while the bucket sizes and masses (sums of w in id order) accumulate. With
// min-p as the only truncation a token with d < log(min_p) - 1e-6 has w < min_p * (1 - 1e-6)
// (exp_nonpositive is accurate to a few ulp), so it is dropped here already, and so is any block
// whose maximum is.
void Sampler::collect_all(const float* logits, double r_max) {
  const double temp = p_.temperature;
  const double x_max = r_max / temp;
  const bool min_p_only = p_.min_p > 0.0f && p_.top_p >= 1.0f;
  const double d_floor = min_p_only ? std::log(static_cast<double>(p_.min_p)) - 1e-6 : -DBL_MAX;
  Cand* c = cands_.data();
  int32_t* count = bucket_count_.data();
  double* mass = bucket_mass_.data();
  std::fill(count, count + kBuckets, 0);
  std::fill(mass, mass + kBuckets, 0.0);
  int64_t n = 0;
  auto add = [&](double r, int64_t id, double d, double w) {
    const int32_t b = bucket_of(d);
    c[n++] = Cand{r, w, static_cast<int32_t>(id), b};
    ++count[b];
    mass[b] += w;
  };
  walk_ids(
      [&](int64_t a, int64_t b) {
        if (min_p_only &&
            !(static_cast<double>(block_stat(logits + a, b - a).max) / temp - x_max >= d_floor))
          return;
        // d and w of the block first, in loops the compiler vectorises; then the scalar append.
        double d[kBlock], w[kBlock];
        const int64_t len = b - a;
        for (int64_t i = 0; i < len; ++i) d[i] = static_cast<double>(logits[a + i]) / temp - x_max;
        for (int64_t i = 0; i < len; ++i) w[i] = clamp_exp_arg(d[i]);
        for (int64_t i = 0; i < len; ++i) w[i] = exp_core(w[i]);
        for (int64_t i = 0; i < len; ++i) {
          if (d[i] >= d_floor) add(static_cast<double>(logits[a + i]), a + i, d[i], w[i]);
        }
      },
      [&](int64_t t, double r) {
        const double d = r / temp - x_max;
        if (d >= d_floor) add(r, t, d, exp_np(d));  // false for r = -inf
      });
  n_cand_ = n;
  if (n <= kSmallCands) {
    group_by_sort();
    return;
  }
  // Groups from the histogram; the layout (a counting sort) is built on first use.
  groups_.clear();
  int32_t start = 0;  // n <= V < 2^31
  for (int32_t b = 0; b < kBuckets; ++b) {
    if (count[b] == 0) continue;
    groups_.push_back(Group{b, start, start + count[b], mass[b], false, false});
    start += count[b];
  }
  layout_ready_ = false;
  n_gathered_ = 0;
}

// Groups cands_[0, n_cand_) (in id order) by bucket with a comparison sort of their indices:
// layout_ ordered by (bucket, id), group masses summed along it (i.e. in id order).
void Sampler::group_by_sort() {
  const Cand* c = cands_.data();
  int32_t* lay = layout_.data();
  const auto n = static_cast<int32_t>(n_cand_);
  for (int32_t j = 0; j < n; ++j) lay[j] = j;
  // Indices ascend with ids, so (bucket, index) order is (bucket, id) order.
  std::sort(lay, lay + n, [c](int32_t a, int32_t b) {
    return c[a].bucket < c[b].bucket || (c[a].bucket == c[b].bucket && a < b);
  });
  groups_.clear();
  for (int32_t j = 0; j < n;) {
    const int32_t b = c[lay[j]].bucket;
    double m = 0.0;
    int32_t e = j;
    for (; e < n && c[lay[e]].bucket == b; ++e) m += c[lay[e]].w;
    groups_.push_back(Group{b, j, e, m, true, false});
    j = e;
  }
  layout_ready_ = true;
}

// Stable counting sort of the candidate indices by bucket into layout_ (ids ascend inside a
// group), using bucket_count_ as the cursors.
void Sampler::ensure_layout() {
  if (layout_ready_) return;
  int32_t* cursor = bucket_count_.data();
  for (const Group& g : groups_) cursor[g.bucket] = g.start;
  const Cand* c = cands_.data();
  int32_t* lay = layout_.data();
  const auto n = static_cast<int32_t>(n_cand_);
  for (int32_t j = 0; j < n; ++j) lay[cursor[c[j].bucket]++] = j;
  for (Group& g : groups_) g.placed = true;
  layout_ready_ = true;
}

// Sorts group g's slice of layout_ into the draw order (r descending, id ascending) once. Before
// the full counting sort, the first few groups asked for are gathered alone by a sequential scan
// of the candidates (cheaper than the scatter when a call needs only one or two groups).
const int32_t* Sampler::sorted_group(size_t g) {
  Group& gr = groups_[g];
  int32_t* lay = layout_.data();
  const Cand* c = cands_.data();
  if (!gr.placed) {
    if (n_gathered_ < 2) {
      int32_t at = gr.start;
      const int32_t b = gr.bucket;
      const auto n = static_cast<int32_t>(n_cand_);
      for (int32_t j = 0; j < n; ++j) {
        if (c[j].bucket == b) lay[at++] = j;
      }
      gr.placed = true;
      ++n_gathered_;
    } else {
      // The scatter rewrites every slice: keep the sorted ones sorted.
      for (Group& other : groups_) other.sorted = false;
      ensure_layout();
    }
  }
  if (!gr.sorted) {
    std::sort(lay + gr.start, lay + gr.end,
              [c](int32_t a, int32_t b) { return better(c[a].r, c[a].id, c[b].r, c[b].id); });
    gr.sorted = true;
  }
  return lay + gr.start;
}

// Steps 2-6 of the pipeline (temperature > 0). Leaves the kept set as groups [0, cut_group_)
// plus the first cut_count_ tokens (draw order) of group cut_group_, of total weight w_total_.
void Sampler::prepare(const float* logits) {
  if (!(p_.top_k > 0 && select_top_k(logits))) {
    double r_max = 0.0;
    greedy(logits, &r_max);  // validates the logits; throws if all are -inf
    collect_all(logits, r_max);
  }
  const Cand* c = cands_.data();
  const size_t n_groups = groups_.size();
  size_t cut_g = n_groups;
  int64_t cut_q = 0;

  if (p_.top_p < 1.0f) {
    const double top_p = p_.top_p;
    double z = 0.0;
    for (const Group& g : groups_) z += g.mass;
    double before = 0.0;  // P_g: mass of the groups before g
    for (size_t g = 0; g < n_groups; ++g) {
      const double after = before + groups_[g].mass;
      if (after / z >= top_p) {
        // The cut falls in g: P_g / z < top_p, so g's first token stays.
        const int32_t* lay = sorted_group(g);
        const int64_t size = groups_[g].end - groups_[g].start;
        double s = before;
        int64_t q = 0;
        while (q < size && s / z < top_p) s += c[lay[q++]].w;
        if (q == size) {
          cut_g = g + 1;
        } else {
          cut_g = g;
          cut_q = q;
        }
        break;
      }
      before = after;
    }
  }

  if (p_.min_p > 0.0f) {
    // Cut before the first token (draw order) with w < min_p. A group whose whole d range lies
    // 1e-6 above log(min_p) keeps every token and one 1e-6 below keeps none, whatever the last
    // ulp of exp; only a group straddling log(min_p) is sorted and scanned.
    const double min_p = p_.min_p;
    const double log_min_p = std::log(min_p);
    for (size_t g = 0; g < n_groups && g <= cut_g; ++g) {
      const int64_t limit = g < cut_g ? groups_[g].end - groups_[g].start : cut_q;
      if (limit == 0) break;
      const int32_t b = groups_[g].bucket;
      const double d_lo = b == kTailBucket ? kNegInf : -(b + 1) / kBucketsPerNat;
      const double d_hi = -b / kBucketsPerNat;
      if (d_lo > log_min_p + 1e-6) continue;
      if (d_hi < log_min_p - 1e-6) {
        cut_g = g;
        cut_q = 0;
        break;
      }
      const int32_t* lay = sorted_group(g);
      int64_t q = 0;
      while (q < limit && c[lay[q]].w >= min_p) ++q;
      if (q < limit) {  // q > 0 for g == 0: the best token has w = exp(0) = 1 >= min_p
        cut_g = g;
        cut_q = q;
        break;
      }
    }
  }

  double w = 0.0;
  for (size_t g = 0; g < cut_g; ++g) w += groups_[g].mass;
  if (cut_q > 0) {
    const int32_t* lay = sorted_group(cut_g);
    for (int64_t q = 0; q < cut_q; ++q) w += c[lay[q]].w;
  }
  cut_group_ = cut_g;
  cut_count_ = cut_q;
  w_total_ = w;
}

int32_t Sampler::draw(double u) {
  const Cand* c = cands_.data();
  const double target = u * w_total_;
  // Walks `limit` tokens of group g in draw order from S = before: the first token with
  // target < S after S += w is drawn. Rounding can leave the group's in-order sum at or below
  // the target (it differs in the last bits from P_{g+1}, summed in id order): then the group's
  // last token with w > 0 is drawn (one exists: the group's mass exceeds target - P_g >= 0).
  auto walk = [&](size_t g, double before, int64_t limit) {
    const int32_t* lay = sorted_group(g);
    double s = before;
    int32_t last = -1;
    for (int64_t q = 0; q < limit; ++q) {
      const Cand& cd = c[lay[q]];
      if (cd.w > 0.0) last = cd.id;
      s += cd.w;
      if (target < s) return cd.id;
    }
    if (last < 0) throw std::logic_error("sampler: the drawn group has no positive weight");
    return last;
  };
  double before = 0.0;
  for (size_t g = 0; g < cut_group_; ++g) {
    const double after = before + groups_[g].mass;
    if (target < after) return walk(g, before, groups_[g].end - groups_[g].start);
    before = after;
  }
  // target = u * W < W for u <= 1 - 2^-53 and W >= 1 (the best token, w = 1, is always kept),
  // and the walk of the cut group repeats W's own sum term by term: it ends the draw.
  if (cut_count_ > 0) return walk(cut_group_, before, cut_count_);
  throw std::logic_error("sampler: the draw walked past the total weight");
}

int32_t Sampler::sample(const float* logits, const int32_t* history, int64_t n_history) {
  check_arg(logits != nullptr, "sampler: logits is null");
  check_history(history, n_history);
  collect_penalties(logits, history, n_history);
  if (p_.temperature <= 0.0f) {
    double r_best = 0.0;
    return greedy(logits, &r_best);
  }
  prepare(logits);
  return draw(rng_.next_double());
}

int32_t Sampler::sample_at(const float* logits, const int32_t* history, int64_t n_history,
                           double u) {
  check_arg(u >= 0.0 && u < 1.0, "sampler: sample_at: u must be in [0, 1), got ", u);
  check_arg(logits != nullptr, "sampler: logits is null");
  check_history(history, n_history);
  collect_penalties(logits, history, n_history);
  if (p_.temperature <= 0.0f) {
    double r_best = 0.0;
    return greedy(logits, &r_best);
  }
  prepare(logits);
  return draw(u);
}

void Sampler::distribution(const float* logits, const int32_t* history, int64_t n_history,
                           float* probs) {
  check_arg(logits != nullptr && probs != nullptr, "sampler: logits or probs is null");
  check_history(history, n_history);
  collect_penalties(logits, history, n_history);
  std::fill(probs, probs + vocab_, 0.0f);
  if (p_.temperature <= 0.0f) {
    double r_best = 0.0;
    probs[greedy(logits, &r_best)] = 1.0f;
    return;
  }
  prepare(logits);
  // Whole groups: every candidate whose bucket precedes the cut group's.
  const int32_t b_cut = cut_group_ < groups_.size() ? groups_[cut_group_].bucket
                                                    : std::numeric_limits<int32_t>::max();
  const Cand* c = cands_.data();
  for (int64_t j = 0; j < n_cand_; ++j) {
    if (c[j].bucket < b_cut) probs[c[j].id] = static_cast<float>(c[j].w / w_total_);
  }
  if (cut_count_ > 0) {
    const int32_t* lay = sorted_group(cut_group_);
    for (int64_t q = 0; q < cut_count_; ++q)
      probs[c[lay[q]].id] = static_cast<float>(c[lay[q]].w / w_total_);
  }
}

}  // namespace bitnet
