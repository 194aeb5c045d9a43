// @file search.h
// @brief Exact inner-product top-k and range search over a gallery of embeddings (1:N search).
//
// The gallery is n rows of `dim` values, stored as fp32 or fp16 (IEEE half bits, half the bytes),
// each row with a caller id (int64 >= 0). Scores are fp32 inner products (cosine for unit vectors).
//
// Results, for every query, are ordered best first: higher score first, equal scores by smaller id.
// A top-k result is k slots per query; slots past the available count (fewer allowed rows than k)
// hold id -1 and score -inf. Scores that are NaN (only possible with unnormalized, overflowing
// vectors) never enter a result.
//
// CPU (search.cc, search_avx2.cc, search_avx512.cc):
//   - few queries (Q <= kScanMaxQueries): a vectorized scan. The rows are split across the pool's
//     threads; each thread scores a block of rows against all queries (each row is read from memory
//     once per search) and keeps one top-k heap per query; the heaps are merged at the end.
//   - more queries: blocked GEMM through fc::sgemm on tiles of kGemmQueryBlock queries x
//     kGemmRowBlock rows (an fp16 tile is first widened to fp32), so no more than one tile of scores
//     per thread is ever materialized; a vectorized threshold pass feeds the same per-thread heaps.
//   Run-time dispatch to AVX-512 / AVX2+F16C / portable, like the GEMM (FACECUDA_SIMD may lower it).
// CUDA (cuda/search.cu; stubbed without nvcc): the gallery resident on the device; cuBLAS GEMM tiles
//   followed by a per-tile k-selection kernel (the Q x N score matrix is never written), and a
//   bandwidth-bound fused scan + selection for a single query.
//
// A filter restricts a search to an allow-list: a bitmap over rows (bit r of allow[r / 64]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace fc {
namespace search {

enum class Storage : int { F32 = 0, F16 = 1 };

constexpr int64_t kMaxDim = 65536;
constexpr int64_t kMaxK = 16384;         // CPU; the CUDA path takes k <= kMaxKCuda
constexpr int64_t kMaxKCuda = 1024;
constexpr int64_t kScanMaxQueries = 8;   // Q above this uses the GEMM path on the CPU
constexpr int64_t kGemmQueryBlock = 256;
constexpr int64_t kGemmRowBlock = 512;
constexpr int64_t kMaxRangeResults = int64_t(1) << 28;  // total entries one range search may return

// A read-only view of a gallery: data is n x dim, row-major (float or uint16 half bits).
struct GalleryView {
  int64_t dim = 0;
  Storage storage = Storage::F32;
  int64_t n = 0;
  const void* data = nullptr;
  const int64_t* ids = nullptr;
};

enum class Path { Auto = 0, Scan = 1, Gemm = 2 };

struct SearchOptions {
  const uint64_t* allow = nullptr;  // optional bitmap over rows, ceil(n / 64) words
  Path path = Path::Auto;           // tests force a path
  int max_threads = 0;              // 0 = the whole pool
};

// queries: Q x dim fp32 (finite). out_ids / out_scores: Q x k. Throws INVALID_ARGUMENT /
// OUT_OF_RANGE for bad sizes (k in [1, kMaxK], dim matching).
void topk_cpu(const GalleryView& g, const float* queries, int64_t Q, int64_t k, int64_t* out_ids, float* out_scores,
              const SearchOptions& opts = SearchOptions());

struct RangeResult {
  std::vector<int64_t> offsets;  // Q + 1: query q's entries are [offsets[q], offsets[q + 1])
  std::vector<int64_t> ids;
  std::vector<float> scores;
};
// Every allowed row with score >= min_score, best first, per query.
RangeResult range_cpu(const GalleryView& g, const float* queries, int64_t Q, float min_score,
                      const SearchOptions& opts = SearchOptions());

// ---- the mutable index behind FaceIndex

// The rows of an index at one moment. Searches hold a shared_ptr to it while they run; the Index
// copies it before a mutation when a search still holds it (copy-on-write), so a search never sees
// a half-applied change and a mutation never waits for a search.
struct Store {
  int64_t dim = 0;
  Storage storage = Storage::F32;
  int64_t n = 0;
  std::vector<float> f32;      // n x dim when storage == F32
  std::vector<uint16_t> f16;   // n x dim when storage == F16
  std::vector<int64_t> ids;    // n
  GalleryView view() const;
  size_t row_bytes() const { return static_cast<size_t>(dim) * (storage == Storage::F16 ? 2 : 4); }
};

class Index {
 public:
  Index(int64_t dim, Storage storage);

  int64_t dim() const { return dim_; }
  Storage storage() const { return storage_; }
  int64_t size() const { return store_->n; }
  int64_t num_ids() const { return static_cast<int64_t>(rows_of_.size()); }
  // The most rows any one id has (1 for an index without repeated ids; 0 when empty).
  int64_t max_rows_per_id() const;
  uint64_t version() const { return version_; }

  // Appends n rows (vectors n x dim fp32, finite; ids >= 0 and <= 2^53 - 1). Repeated ids are allowed
  // (several embeddings of one identity). Validates everything before changing anything.
  void add(const int64_t* ids, const float* vectors, int64_t n);
  // Appends rows already in the storage format (load): data is n x dim floats or halves.
  void add_raw(const int64_t* ids, const void* data, int64_t n);
  // Removes every row of each id; returns the number of rows removed. Unknown ids are ignored. The
  // last row moves into each freed slot and the vacated tail is zeroed, so a removed vector's bytes
  // do not survive in the index (nor in a file saved from it).
  int64_t remove(const int64_t* ids, int64_t n);
  // Replaces all rows of `id` with one vector. Throws OUT_OF_RANGE when id is not in the index.
  void update(int64_t id, const float* vector);
  bool contains(int64_t id) const { return rows_of_.count(id) != 0; }

  // A consistent snapshot for a search (no copy).
  std::shared_ptr<const Store> snapshot() const { return store_; }
  // The allow bitmap over the snapshot's rows for a list of ids (unknown ids are ignored).
  std::vector<uint64_t> allow_bitmap(const int64_t* ids, int64_t n) const;

  // One row per id: the L2-normalized mean of its rows (a zero mean stays zero), in the index's
  // storage, ids ascending. Cached per version; safe to call from a search thread with a snapshot.
  static std::shared_ptr<const Store> means_of(const Store& s);

 private:
  Store& writable();
  void append_row(int64_t id, const float* v);
  void remove_row(int64_t r);

  int64_t dim_;
  Storage storage_;
  std::shared_ptr<Store> store_;
  std::unordered_map<int64_t, std::vector<int64_t>> rows_of_;
  uint64_t version_ = 0;
};

// Identity-level top-k over a multi-image index, exact: 'max' scores an id by its best row (row
// top-k' with k' = (k - 1) * max_rows_per_id + 1 contains every winning id's best row, then
// duplicates are dropped); the caller runs 'mean' as a plain search over Index::means_of.
void topk_max_per_id_cpu(const GalleryView& g, int64_t max_rows_per_id, const float* queries, int64_t Q, int64_t k,
                         int64_t* out_ids, float* out_scores, const SearchOptions& opts = SearchOptions());

// Shared checks (both devices): throws INVALID_ARGUMENT / OUT_OF_RANGE with the argument named.
void check_search_args(const GalleryView& g, const float* queries, int64_t Q, int64_t k, int64_t max_k);
// Throws INVALID_ARGUMENT naming the first non-finite value ("queries[3][17] is NaN").
void check_finite(const float* v, int64_t rows, int64_t dim, const char* name);

// ---- CUDA (cuda/search.cu; the no-CUDA build throws CUDA_UNAVAILABLE)

// A gallery copy resident on a device, uploaded from a snapshot. Build and use on that device's
// queue thread.
class DeviceGallery {
 public:
  DeviceGallery(int device, const Store& s);
  ~DeviceGallery();
  DeviceGallery(const DeviceGallery&) = delete;
  DeviceGallery& operator=(const DeviceGallery&) = delete;
  int device() const { return device_; }
  int64_t n() const { return n_; }
  int64_t dim() const { return dim_; }
  Storage storage() const { return storage_; }
  const void* data() const { return data_; }
  const int64_t* ids() const { return ids_; }

 private:
  int device_;
  int64_t n_, dim_;
  Storage storage_;
  void* data_ = nullptr;     // n x dim on the device
  int64_t* ids_ = nullptr;   // n on the device
};

// Top-k on the device (k <= kMaxKCuda); queries, allow and the outputs are host memory. Blocks until
// the results are on the host.
void topk_cuda(const DeviceGallery& g, const float* queries, int64_t Q, int64_t k, int64_t* out_ids,
               float* out_scores, const uint64_t* allow = nullptr);

}  // namespace search
}  // namespace fc
