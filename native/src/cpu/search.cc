// @file search.cc
// @brief The CPU search driver: exact inner-product top-k and range search (contract in
// facecuda/search.h), the portable kernels, and the level dispatch.
//
// Two paths, one selection:
//   scan  (Q <= kScanMaxQueries): rows split into chunks dealt to the pool's threads; a chunk is
//         scored in blocks of kScanBlock rows against every query (each row read once per search).
//   gemm  (larger Q): tasks are tiles of kGemmRowBlock rows; a task gathers its tile (fp16 widened to
//         fp32, filtered rows packed together; an unfiltered fp32 tile is used in place) and runs
//         fc::sgemm for each block of kGemmQueryBlock queries into a per-thread score tile. Nothing
//         larger than one tile of scores per thread exists at any time.
// Both feed the per-thread sinks through the kernel's threshold pass (select_ge against the current
// k-th best score, so almost every score is rejected in SIMD); the sinks are merged at the end in
// the total order (score desc, id asc), so results never depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "cpu/search_internal.h"
#include "facecuda/cpu_info.h"
#include "facecuda/dtype.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/search.h"
#include "facecuda/threadpool.h"

namespace fc {
namespace search {

namespace kern {
namespace {

void score_f32_portable(const float* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q,
                        int64_t nq, float* out, int64_t ldo) {
  for (int64_t i = 0; i < nr; ++i) {
    const float* g = G + (rows ? rows[i] : r0 + i) * dim;
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      float acc = 0.0f;
      for (int64_t d = 0; d < dim; ++d) acc += g[d] * qp[d];
      out[q * ldo + i] = acc;
    }
  }
}

void score_f16_portable(const uint16_t* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q,
                        int64_t nq, float* out, int64_t ldo) {
  std::vector<float> w(static_cast<size_t>(dim));
  for (int64_t i = 0; i < nr; ++i) {
    const uint16_t* g = G + (rows ? rows[i] : r0 + i) * dim;
    for (int64_t d = 0; d < dim; ++d) w[d] = f16_to_f32(g[d]);
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      float acc = 0.0f;
      for (int64_t d = 0; d < dim; ++d) acc += w[d] * qp[d];
      out[q * ldo + i] = acc;
    }
  }
}

void widen_f16_portable(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

int64_t select_ge_portable(const float* s, int64_t n, float thr, int32_t* idx) {
  int64_t cnt = 0;
  for (int64_t i = 0; i < n; ++i)
    if (s[i] >= thr) idx[cnt++] = static_cast<int32_t>(i);
  return cnt;
}

}  // namespace

const Kernels& kernels_portable() {
  static const Kernels k = {"portable", score_f32_portable, score_f16_portable, widen_f16_portable,
                            select_ge_portable};
  return k;
}

}  // namespace kern

namespace {

constexpr int64_t kScanBlock = 256;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

const kern::Kernels& kernels() {
  switch (simd_level()) {
    case SimdLevel::Avx512: return kern::kernels_avx512();
    case SimdLevel::Avx2: return kern::kernels_avx2();
    default: return kern::kernels_portable();
  }
}

struct Entry {
  float s;
  int64_t id;
};
// The total order of results: higher score first, then smaller id.
inline bool better(const Entry& a, const Entry& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); }

// A bounded heap whose root is the worst kept entry.
struct TopK {
  Entry* h = nullptr;
  int64_t k = 0, size = 0;
  float threshold() const { return size < k ? kNegInf : h[0].s; }
  void push(float s, int64_t id) {
    const Entry e{s, id};
    if (size < k) {
      int64_t i = size++;
      while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!better(h[p], e)) break;  // parent already worse than e (or equal)
        h[i] = h[p];
        i = p;
      }
      h[i] = e;
      return;
    }
    if (!better(e, h[0])) return;
    int64_t i = 0;
    for (;;) {
      int64_t c = 2 * i + 1;
      if (c >= size) break;
      if (c + 1 < size && better(h[c], h[c + 1])) ++c;  // the worse child
      if (!better(e, h[c])) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = e;
  }
};

// Per-thread, per-query top-k sinks in one allocation.
class TopKSinks {
 public:
  TopKSinks(int threads, int64_t Q, int64_t k) : Q_(Q), k_(k), store_(static_cast<size_t>(threads * Q * k)) {
    heaps_.resize(static_cast<size_t>(threads * Q));
    for (int64_t i = 0; i < threads * Q; ++i) {
      heaps_[i].h = store_.data() + i * k;
      heaps_[i].k = k;
    }
  }
  float threshold(int t, int64_t q) const { return heaps_[t * Q_ + q].threshold(); }
  void push(int t, int64_t q, float s, int64_t id) { heaps_[t * Q_ + q].push(s, id); }
  // Best first, k slots per query (id -1 / -inf past the available count).
  void merge(int threads, int64_t* out_ids, float* out_scores) {
    std::vector<Entry> all;
    for (int64_t q = 0; q < Q_; ++q) {
      all.clear();
      for (int t = 0; t < threads; ++t) {
        const TopK& h = heaps_[t * Q_ + q];
        all.insert(all.end(), h.h, h.h + h.size);
      }
      const int64_t m = std::min<int64_t>(k_, static_cast<int64_t>(all.size()));
      std::partial_sort(all.begin(), all.begin() + m, all.end(), better);
      for (int64_t j = 0; j < k_; ++j) {
        out_ids[q * k_ + j] = j < m ? all[j].id : -1;
        out_scores[q * k_ + j] = j < m ? all[j].s : kNegInf;
      }
    }
  }

 private:
  int64_t Q_, k_;
  std::vector<Entry> store_;
  std::vector<TopK> heaps_;
};

class RangeSinks {
 public:
  RangeSinks(int threads, int64_t Q, float min_score) : Q_(Q), min_(min_score), lists_(static_cast<size_t>(threads * Q)) {}
  float threshold(int, int64_t) const { return min_; }
  void push(int t, int64_t q, float s, int64_t id) {
    auto& l = lists_[t * Q_ + q];
    if (l.size() % 4096 == 0) {
      // Cheap global bound (checked per 4096 entries): a near-minimum threshold on a big gallery
      // would otherwise allocate until the process dies.
      int64_t total = 0;
      for (const auto& x : lists_) total += static_cast<int64_t>(x.size());
      FC_CHECK(total < kMaxRangeResults, OutOfRange, "Expected a range search with at most ", kMaxRangeResults,
               " results in all but minScore ", min_, " matches more; raise minScore or use top-k search");
    }
    l.push_back(Entry{s, id});
  }
  RangeResult merge(int threads) {
    RangeResult r;
    r.offsets.assign(static_cast<size_t>(Q_ + 1), 0);
    std::vector<Entry> all;
    for (int64_t q = 0; q < Q_; ++q) {
      all.clear();
      for (int t = 0; t < threads; ++t) {
        auto& l = lists_[t * Q_ + q];
        all.insert(all.end(), l.begin(), l.end());
        std::vector<Entry>().swap(l);
      }
      std::sort(all.begin(), all.end(), better);
      for (const Entry& e : all) {
        r.ids.push_back(e.id);
        r.scores.push_back(e.s);
      }
      r.offsets[q + 1] = static_cast<int64_t>(r.ids.size());
    }
    return r;
  }

 private:
  int64_t Q_;
  float min_;
  std::vector<std::vector<Entry>> lists_;
};

// The rows a search may visit: all of them, or the allowed ones listed.
struct RowSet {
  int64_t count = 0;
  std::vector<int64_t> list;  // empty: rows 0 .. count-1
  const int64_t* ptr(int64_t i) const { return list.empty() ? nullptr : list.data() + i; }
  int64_t row(int64_t i) const { return list.empty() ? i : list[i]; }
};

RowSet rows_for(const GalleryView& g, const uint64_t* allow) {
  RowSet rs;
  if (!allow) {
    rs.count = g.n;
    return rs;
  }
  for (int64_t r = 0; r < g.n; ++r)
    if ((allow[r >> 6] >> (r & 63)) & 1u) rs.list.push_back(r);
  rs.count = static_cast<int64_t>(rs.list.size());
  if (rs.count == g.n) rs.list.clear();  // everything allowed: visit contiguously
  return rs;
}

template <typename Sinks>
void feed(const kern::Kernels& ks, Sinks& sinks, int t, int64_t q, const float* s, int64_t nr, const GalleryView& g,
          const RowSet& rs, int64_t i0, int32_t* idx) {
  const float thr = sinks.threshold(t, q);
  const int64_t c = ks.select_ge(s, nr, thr, idx);
  for (int64_t j = 0; j < c; ++j) {
    const int64_t r = rs.row(i0 + idx[j]);
    sinks.push(t, q, s[idx[j]], g.ids[r]);
  }
}

template <typename Sinks>
void run_scan(const GalleryView& g, const RowSet& rs, const float* Q, int64_t nq, Sinks& sinks, int threads,
              int max_threads) {
  const kern::Kernels& ks = kernels();
  // Chunks: several per thread (static dealing), each a multiple of the block.
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads * 8, (rs.count + kScanBlock - 1) / kScanBlock));
  int64_t per = (rs.count + chunks - 1) / chunks;
  per = (per + kScanBlock - 1) / kScanBlock * kScanBlock;
  chunks = (rs.count + per - 1) / per;
  std::vector<std::vector<float>> sbuf(threads, std::vector<float>(static_cast<size_t>(nq * kScanBlock)));
  std::vector<std::vector<int32_t>> ibuf(threads, std::vector<int32_t>(kScanBlock));
  ThreadPool::global().run(
      chunks,
      [&](int64_t c, int t) {
        float* s = sbuf[t].data();
        int32_t* idx = ibuf[t].data();
        const int64_t end = std::min(rs.count, (c + 1) * per);
        for (int64_t i0 = c * per; i0 < end; i0 += kScanBlock) {
          const int64_t nr = std::min(kScanBlock, end - i0);
          if (g.storage == Storage::F32)
            ks.score_f32(static_cast<const float*>(g.data), rs.ptr(i0), i0, nr, g.dim, Q, nq, s, kScanBlock);
          else
            ks.score_f16(static_cast<const uint16_t*>(g.data), rs.ptr(i0), i0, nr, g.dim, Q, nq, s, kScanBlock);
          for (int64_t q = 0; q < nq; ++q) feed(ks, sinks, t, q, s + q * kScanBlock, nr, g, rs, i0, idx);
        }
      },
      max_threads);
}

template <typename Sinks>
void run_gemm(const GalleryView& g, const RowSet& rs, const float* Q, int64_t nq, Sinks& sinks, int threads,
              int max_threads) {
  const kern::Kernels& ks = kernels();
  int64_t NT = kGemmRowBlock, QB = kGemmQueryBlock;
  if (const char* e = std::getenv("FACECUDA_SEARCH_TILE")) {  // "queries,rows": a tuning aid
    long long a = 0, b = 0;
    if (std::sscanf(e, "%lld,%lld", &a, &b) == 2 && a >= 1 && b >= 16 && a <= 65536 && b <= 65536) {
      QB = a;
      NT = b;
    }
  }
  const int64_t D = g.dim;
  const int64_t tiles = (rs.count + NT - 1) / NT;
  const bool in_place = g.storage == Storage::F32 && rs.list.empty();
  std::vector<std::vector<float>> tbuf(threads), sbuf(threads);
  std::vector<std::vector<int32_t>> ibuf(threads, std::vector<int32_t>(NT));
  GemmOptions go;
  go.max_threads = 1;
  ThreadPool::global().run(
      tiles,
      [&](int64_t tile, int t) {
        const int64_t i0 = tile * NT, nr = std::min(NT, rs.count - i0);
        const float* B;
        if (in_place) {
          B = static_cast<const float*>(g.data) + i0 * D;
        } else {
          auto& tb = tbuf[t];
          if (tb.empty()) tb.resize(static_cast<size_t>(NT * D));
          for (int64_t i = 0; i < nr; ++i) {
            const int64_t r = rs.row(i0 + i);
            if (g.storage == Storage::F32)
              std::memcpy(tb.data() + i * D, static_cast<const float*>(g.data) + r * D, sizeof(float) * D);
            else
              ks.widen_f16(static_cast<const uint16_t*>(g.data) + r * D, tb.data() + i * D, D);
          }
          B = tb.data();
        }
        auto& sb = sbuf[t];
        if (sb.empty()) sb.resize(static_cast<size_t>(QB * NT));
        int32_t* idx = ibuf[t].data();
        for (int64_t q0 = 0; q0 < nq; q0 += QB) {
          const int64_t mq = std::min(QB, nq - q0);
          sgemm(false, true, mq, nr, D, 1.0f, Q + q0 * D, D, B, D, 0.0f, sb.data(), nr, go);
          for (int64_t q = 0; q < mq; ++q) feed(ks, sinks, t, q0 + q, sb.data() + q * nr, nr, g, rs, i0, idx);
        }
      },
      max_threads);
}

template <typename Sinks>
void run(const GalleryView& g, const float* Q, int64_t nq, Sinks& sinks, int threads, const SearchOptions& o) {
  const RowSet rs = rows_for(g, o.allow);
  if (rs.count == 0 || nq == 0) return;
  const bool scan = o.path == Path::Scan || (o.path == Path::Auto && nq <= kScanMaxQueries);
  if (scan) {
    // The scan kernels hold every query of a pass: passes of at most kScanMaxQueries queries.
    for (int64_t q0 = 0; q0 < nq; q0 += kScanMaxQueries) {
      const int64_t m = std::min(kScanMaxQueries, nq - q0);
      struct Offset {
        Sinks& s;
        int64_t q0;
        float threshold(int t, int64_t q) const { return s.threshold(t, q0 + q); }
        void push(int t, int64_t q, float v, int64_t id) { s.push(t, q0 + q, v, id); }
      } off{sinks, q0};
      run_scan(g, rs, Q + q0 * g.dim, m, off, threads, o.max_threads);
    }
  } else {
    run_gemm(g, rs, Q, nq, sinks, threads, o.max_threads);
  }
}

}  // namespace

void topk_cpu(const GalleryView& g, const float* queries, int64_t Q, int64_t k, int64_t* out_ids, float* out_scores,
              const SearchOptions& opts) {
  check_search_args(g, queries, Q, k, kMaxK);
  FC_CHECK(Q == 0 || (out_ids && out_scores), InvalidArgument, "Expected output buffers");
  const int threads = ThreadPool::global().threads_for(opts.max_threads);
  const int64_t kk = std::min<int64_t>(k, std::max<int64_t>(g.n, 1));  // never keep more than n
  TopKSinks sinks(threads, Q, kk);
  run(g, queries, Q, sinks, threads, opts);
  std::vector<int64_t> ids(static_cast<size_t>(Q * kk));
  std::vector<float> sc(static_cast<size_t>(Q * kk));
  sinks.merge(threads, ids.data(), sc.data());
  for (int64_t q = 0; q < Q; ++q)
    for (int64_t j = 0; j < k; ++j) {
      out_ids[q * k + j] = j < kk ? ids[q * kk + j] : -1;
      out_scores[q * k + j] = j < kk ? sc[q * kk + j] : kNegInf;
    }
}

RangeResult range_cpu(const GalleryView& g, const float* queries, int64_t Q, float min_score,
                      const SearchOptions& opts) {
  check_search_args(g, queries, Q, 1, kMaxK);
  FC_CHECK(!std::isnan(min_score), InvalidArgument, "Expected a number for minScore but received NaN");
  const int threads = ThreadPool::global().threads_for(opts.max_threads);
  RangeSinks sinks(threads, Q, min_score);
  run(g, queries, Q, sinks, threads, opts);
  return sinks.merge(threads);
}

void topk_max_per_id_cpu(const GalleryView& g, int64_t max_rows_per_id, const float* queries, int64_t Q, int64_t k,
                         int64_t* out_ids, float* out_scores, const SearchOptions& opts) {
  check_search_args(g, queries, Q, k, kMaxK);
  const int64_t m = std::max<int64_t>(1, max_rows_per_id);
  // An id among the k best has its best row ahead of at most (k - 1) other ids' rows (m each at most).
  const int64_t kr = std::max<int64_t>(1, std::min<int64_t>(g.n, (k - 1) * m + 1));
  const int threads = ThreadPool::global().threads_for(opts.max_threads);
  FC_CHECK(Q * kr * threads <= (int64_t(1) << 28), OutOfRange, "Expected k * (most rows per id) small enough for ",
           "aggregate 'max' but k=", k, " with up to ", m, " rows per id needs ", kr,
           " candidates per query; use aggregate 'mean' or a smaller k");
  TopKSinks sinks(threads, Q, kr);
  run(g, queries, Q, sinks, threads, opts);
  std::vector<int64_t> ids(static_cast<size_t>(Q * kr));
  std::vector<float> sc(static_cast<size_t>(Q * kr));
  sinks.merge(threads, ids.data(), sc.data());
  std::unordered_set<int64_t> seen;
  for (int64_t q = 0; q < Q; ++q) {
    seen.clear();
    int64_t j = 0;
    for (int64_t c = 0; c < kr && j < k; ++c) {
      const int64_t id = ids[q * kr + c];
      if (id < 0) break;
      if (!seen.insert(id).second) continue;  // a worse row of an id already kept
      out_ids[q * k + j] = id;
      out_scores[q * k + j] = sc[q * kr + c];
      ++j;
    }
    for (; j < k; ++j) {
      out_ids[q * k + j] = -1;
      out_scores[q * k + j] = kNegInf;
    }
  }
}

}  // namespace search
}  // namespace fc
