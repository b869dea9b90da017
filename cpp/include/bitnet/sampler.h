// Next-token sampler: penalties, temperature, top-k, top-p, min-p and a seeded, portable draw.
//
// One Sampler per sequence. It owns its RNG and its scratch buffers (allocated in the
// constructor, sized by the vocabulary), so sample() / distribution() never allocate. It is not
// thread-safe: concurrent calls on one object must be serialised by the caller.
//
// ---- The processing pipeline (HF transformers' order for these processors/warpers) ----------
// Inputs: logits l[V] (float32, not modified; -inf allowed and means "masked"; NaN or +inf is an
// error naming the index) and history h[n] (prompt + generated ids, oldest first; every id must
// be in [0, V)). All arithmetic below is IEEE float64 with +, -, *, / only (exp included, see
// exp_nonpositive; no FMA contraction), so results are bit-identical on every platform and a
// numpy float64 reimplementation reproduces them exactly.
//
//  1. Penalties. The window is the tail of the history: its last penalty_last_n ids (all of them
//     for -1, none for 0). For every distinct id t of the window with count c >= 1:
//       r = double(l[t]);
//       if (repetition_penalty != 1) r = r > 0 ? r / repetition_penalty : r * repetition_penalty;
//       r = r - (double(c) * frequency_penalty + presence_penalty);
//     (the repetition penalty is HF's RepetitionPenaltyLogitsProcessor / CTRL; the subtraction is
//     OpenAI's frequency/presence penalty, applied after it as llama.cpp does). Other ids keep
//     r = double(l[i]). The step is skipped when it is the identity (penalty 1, both others 0).
//  2. Temperature. temperature <= 0 means greedy: the token is argmax_i r_i (ties: lowest id),
//     found in one pass without sorting, no RNG output consumed, steps 3-7 skipped, and
//     distribution() is one-hot at that token. Otherwise x_i = r_i / temperature (float64, so no
//     overflow for any float temperature or penalty). Tokens with r = -inf are masked; if every
//     token is masked the call throws. The candidates are the finite tokens; "in order" below
//     means r descending, then id ascending (x = r / T increases with r: decreasing probability).
//  3. top-k (0: off). If 0 < k < (number of candidates), keep the first k in order: ties at the
//     boundary go to the lowest ids. (HF's TopKLogitsWarper keeps every token tied with the k-th,
//     so it may keep more than k; llama.cpp keeps exactly k, tie order unspecified.)
//     Weights and buckets of the candidates left: d = x - x_max (x_max: the best candidate's x),
//     w = exp_nonpositive(d) (p is proportional to w; the best has w = 1) and bucket
//     b = min(floor(-256 * d), 16384): 1/256 nat of log-probability per bucket, the last one
//     taking every d <= -64. d is monotone in r, so buckets are contiguous ranges of the order.
//     Group g = the candidates of the g-th non-empty bucket (ascending b); its mass M_g = sum of
//     its w in ascending id order; P_0 = 0, P_{g+1} = P_g + M_g; Z = P_G (G groups). Inside
//     group g the mass before a token is S, accumulated in order from S = P_g (S += w for each
//     token passed). In exact arithmetic S is just the total w of the better tokens; summing
//     whole buckets first lets top-p and the draw sort only the one bucket they stop in.
//  4. top-p (1: off). The first group g with P_{g+1} / Z >= top_p (it exists: P_G / Z = 1) is
//     cut: groups before it are kept whole, groups after it dropped, and in it the tokens with
//     S / Z < top_p (a prefix; its first token always, since P_g / Z < top_p). So the kept set is
//     the tokens whose mass before them is below top_p: the smallest prefix reaching top_p, as
//     HF's TopPLogitsWarper (it removes a token when its ascending cumulative probability,
//     1 - S / Z, is <= 1 - top_p, and always keeps the most likely one). (llama.cpp keeps the
//     prefix up to the first cumulative sum >= top_p: the same set in exact arithmetic.)
//  5. min-p (0: off). Of the tokens left, keep those before the first one, in order, with
//     w < min_p: p >= min_p * p_max as HF's MinPLogitsWarper (the best token always stays).
//     (llama.cpp compares logits with max + log(min_p), the same set up to rounding.)
//     Where llama.cpp differs in substance: its default chain applies the temperature *last*
//     (penalties -> top-k -> top-p -> min-p -> temperature -> draw), so its top-p / min-p see
//     the temperature-1 distribution; its penalty window defaults to 64 ids like ours, while HF
//     penalises every id of the sequence (penalty_last_n = -1 here).
//  6. Renormalise: p = w / W over the kept tokens. W = P_g when the kept set ends at the start of
//     group g (W = Z when nothing is cut), else the S reached after the last kept token of the
//     cut group.
//  7. Draw (one RNG output per non-greedy call, even if one token is left):
//       u = (xoshiro256**() >> 11) * 2^-53          (uniform double in [0, 1), 53 bits)
//       target = u * W. The first group g with target < P_{g+1} (for the cut group: its kept
//       part, with W for P_{g+1}) is walked in order from S = P_g: S += w, and the first token
//       with target < S is drawn. If rounding leaves none, the last token of that group with
//       w > 0 is drawn (if target >= W, the last kept token with w > 0).
//     The RNG is xoshiro256** (Blackman & Vigna) seeded by four successive SplitMix64 outputs
//     of `seed`: state[i] = splitmix64_next(&x) with x starting at seed, i = 0..3.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace bitnet {

struct SamplerParams {
  float temperature = 1.0f;         // <= 0: greedy (argmax, ties -> lowest id); no RNG draw
  int32_t top_k = 0;                // 0: off; else keep the k highest (ties: lowest ids first)
  float top_p = 1.0f;               // in (0, 1]; nucleus (HF semantics, see above); 1: off
  float min_p = 0.0f;               // in [0, 1]; keep p >= min_p * p_max; 0: off
  float repetition_penalty = 1.0f;  // > 0; CTRL/HF: logit > 0 ? logit / p : logit * p; 1: off
  float frequency_penalty = 0.0f;   // OpenAI: logit -= count * frequency_penalty
  float presence_penalty = 0.0f;    // OpenAI: logit -= (count > 0) * presence_penalty
  int32_t penalty_last_n = 64;      // penalty window over the history tail; -1: all; 0: none
  uint64_t seed = 0;                // RNG seed (any value)
};

// exp(d) for d <= 0 (throws std::invalid_argument otherwise), computed with IEEE float64 +, -, *
// only, so it is bit-identical on every platform (libm's exp is not): the sampler's softmax
// weights. Relative error about 1 ulp (tests check <= 4 ulp against numpy's exp). Algorithm:
//   dc = max(d, -746); t = dc * 0x1.71547652b82fep+0 + 0x1.8p52; n = t - 0x1.8p52;
//   r = (dc - n * 0x1.62e42feep-1) - n * 0x1.a39ef35793c76p-33;
//   p = Horner over the degree-13 Taylor coefficients 1/13!, ..., 1/2!, 1, 1 (as double
//       literals) at r;
//   m = bits(0x1.8p52) - bits(t) (= -n, uint64); m1 = m >> 1; m2 = m - m1;
//   result = (p * double_from_bits((1023 - m1) << 52)) * double_from_bits((1023 - m2) << 52)
//   (which rounds to 0 for every d <= -746, -inf included).
double exp_nonpositive(double d);

// Throws std::invalid_argument naming the first invalid field: temperature not finite, top_k < 0,
// top_p outside (0, 1], min_p outside [0, 1], repetition_penalty not finite or <= 0, frequency /
// presence penalty not finite, penalty_last_n < -1.
void validate_sampler_params(const SamplerParams& p);

// SplitMix64 seeding + xoshiro256** (exact algorithms documented above; portable bit for bit).
class Xoshiro256ss {
 public:
  explicit Xoshiro256ss(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next();
  // Uniform double in [0, 1): the top 53 bits of next() times 2^-53.
  double next_double() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  // Validates p (see validate_sampler_params) and vocab_size in [1, 2^31 - 1]; allocates the
  // scratch buffers. With temperature > 0: 28 bytes per vocabulary entry, 24 per top-k slot and
  // up to 0.7 MiB of bucket tables; with a penalty on: 4 bytes per entry and 16 per window slot.
  // Greedy sampling without penalties allocates nothing.
  Sampler(const SamplerParams& p, int64_t vocab_size);

  // Restarts the RNG stream as if constructed with this seed.
  void reseed(uint64_t seed);

  // logits [vocab_size] (not modified); history [n_history] = prompt + generated ids (the
  // penalty window is its tail). Returns the sampled token id. Throws std::invalid_argument on
  // a NaN / +inf logit, all logits -inf, or a history id outside [0, vocab_size).
  int32_t sample(const float* logits, const int32_t* history, int64_t n_history);

  // The token sample() returns when its uniform draw is u, in [0, 1) (step 7 without the RNG;
  // sample() is sample_at(..., rng.next_double())). Consumes no RNG output. For tests and
  // quantile-based decoding.
  int32_t sample_at(const float* logits, const int32_t* history, int64_t n_history, double u);

  // Writes to probs [vocab_size] the distribution sample() draws from (step 6 above: zero for
  // removed tokens, one-hot for greedy). Consumes no RNG output. Same errors as sample().
  void distribution(const float* logits, const int32_t* history, int64_t n_history, float* probs);

  const SamplerParams& params() const { return p_; }
  int64_t vocab_size() const { return vocab_; }

 private:
  struct Cand {
    double r;        // penalised logit (the sort key with id)
    double w;        // exp_nonpositive(r / T - x_max), in [0, 1]
    int32_t id;      // token id
    int32_t bucket;  // min(floor(-256 * (r / T - x_max)), 16384)
  };
  static_assert(sizeof(Cand) == 24, "Cand is 24 bytes: r, w, id, bucket");

  // The candidates of one bucket: layout_[start, end), with their mass (sum of w in id order);
  // `placed` once the slice holds them, `sorted` once it is in draw order.
  struct Group {
    int32_t bucket;
    int32_t start;
    int32_t end;
    double mass;
    bool placed;
    bool sorted;
  };

  void check_history(const int32_t* history, int64_t n_history) const;
  void collect_penalties(const float* logits, const int32_t* history, int64_t n_history);
  template <class Plain, class Pen>
  void walk_ids(Plain&& plain, Pen&& pen) const;
  int32_t greedy(const float* logits, double* r_best);
  bool select_top_k(const float* logits);
  void collect_all(const float* logits, double r_max);
  void group_by_sort();
  void ensure_layout();
  const int32_t* sorted_group(size_t g);
  void prepare(const float* logits);
  int32_t draw(double u);
  [[noreturn]] void throw_bad_logit(const float* logits) const;

  SamplerParams p_;
  int64_t vocab_;
  bool penalties_on_;
  Xoshiro256ss rng_;

  // Penalties: counts_ is all zero between calls; penal_ holds (id, penalised logit r) of the
  // distinct window ids of the current call, sorted by id.
  std::vector<int32_t> counts_;
  std::vector<std::pair<int32_t, double>> penal_;

  // Non-greedy scratch (temperature > 0). heap_ [min(k, V)]: top-k selection. cands_ [<= V]:
  // the candidates (top-k survivors or every finite token) in id order, n_cand_ of them.
  // layout_ [<= V]: candidate indices ordered by (bucket, id), a group's slice re-sorted into
  // draw order when needed. groups_: the non-empty buckets in order. bucket_count_ /
  // bucket_mass_ [16385]: per-bucket histogram of collect_all (count, then cursor; mass).
  // The kept set is groups [0, cut_group_) plus the first cut_count_ tokens (draw order) of
  // group cut_group_, of total weight w_total_.
  std::vector<Cand> heap_;
  std::vector<Cand> cands_;
  std::vector<int32_t> layout_;
  std::vector<Group> groups_;
  std::vector<int32_t> bucket_count_;
  std::vector<double> bucket_mass_;
  int64_t n_cand_ = 0;
  bool layout_ready_ = false;
  int32_t n_gathered_ = 0;  // groups placed by a scan since collect_all
  size_t cut_group_ = 0;
  int64_t cut_count_ = 0;
  double w_total_ = 0.0;
};

}  // namespace bitnet
