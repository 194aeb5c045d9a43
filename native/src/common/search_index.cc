// @file search_index.cc
// @brief What both search backends share: argument checks, the gallery view, and fc::search::Index
// (rows, ids, id -> rows map, copy-on-write snapshots, per-id means). Contract in facecuda/search.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "facecuda/dtype.h"
#include "facecuda/error.h"
#include "facecuda/search.h"

namespace fc {
namespace search {

namespace {
constexpr int64_t kMaxId = 9007199254740991LL;  // 2^53 - 1: every id survives a JS number
}

void check_finite(const float* v, int64_t rows, int64_t dim, const char* name) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < dim; ++d) {
      const float x = v[r * dim + d];
      if (!std::isfinite(x))
        fail(Code::InvalidArgument,
             str("Expected finite values in ", name, " but ", name, "[", r, "][", d, "] is ", std::isnan(x) ? "NaN" : (x > 0 ? "Infinity" : "-Infinity")));
    }
}

void check_search_args(const GalleryView& g, const float* queries, int64_t Q, int64_t k, int64_t max_k) {
  FC_CHECK(g.dim >= 1 && g.dim <= kMaxDim, InvalidArgument, "Expected a gallery dim in [1, ", kMaxDim, "] but received ", g.dim);
  FC_CHECK(g.n >= 0, InvalidArgument, "Expected a gallery size >= 0 but received ", g.n);
  FC_CHECK(g.n == 0 || (g.data && g.ids), InvalidArgument, "Expected gallery data and ids");
  FC_CHECK(Q >= 0, InvalidArgument, "Expected a query count >= 0 but received ", Q);
  FC_CHECK(Q == 0 || queries, InvalidArgument, "Expected query data");
  FC_CHECK(k >= 1 && k <= max_k, OutOfRange, "Expected an integer between 1 and ", max_k, " for k but received ", k);
}

GalleryView Store::view() const {
  GalleryView v;
  v.dim = dim;
  v.storage = storage;
  v.n = n;
  v.data = storage == Storage::F32 ? static_cast<const void*>(f32.data()) : static_cast<const void*>(f16.data());
  v.ids = ids.data();
  return v;
}

Index::Index(int64_t dim, Storage storage) : dim_(dim), storage_(storage), store_(std::make_shared<Store>()) {
  FC_CHECK(dim >= 1 && dim <= kMaxDim, OutOfRange, "Expected an integer between 1 and ", kMaxDim, " for dim but received ", dim);
  FC_CHECK(storage == Storage::F32 || storage == Storage::F16, InvalidArgument, "Expected storage 'f32' or 'f16'");
  store_->dim = dim;
  store_->storage = storage;
}

int64_t Index::max_rows_per_id() const {
  size_t m = 0;
  for (const auto& kv : rows_of_) m = std::max(m, kv.second.size());
  return static_cast<int64_t>(m);
}

Store& Index::writable() {
  // A search still holds this store: give the index its own copy (the search keeps the old one).
  if (store_.use_count() > 1) store_ = std::make_shared<Store>(*store_);
  ++version_;
  return *store_;
}

void Index::append_row(int64_t id, const float* v) {
  Store& s = *store_;
  const size_t D = static_cast<size_t>(dim_);
  if (storage_ == Storage::F32) {
    s.f32.insert(s.f32.end(), v, v + D);
  } else {
    const size_t at = s.f16.size();
    s.f16.resize(at + D);
    for (size_t d = 0; d < D; ++d) s.f16[at + d] = f32_to_f16(v[d]);
  }
  s.ids.push_back(id);
  rows_of_[id].push_back(s.n);
  ++s.n;
}

void Index::add(const int64_t* ids, const float* vectors, int64_t n) {
  FC_CHECK(n >= 0, InvalidArgument, "Expected a row count >= 0 but received ", n);
  if (n == 0) return;
  FC_CHECK(ids && vectors, InvalidArgument, "Expected ids and vectors");
  for (int64_t i = 0; i < n; ++i)
    FC_CHECK(ids[i] >= 0 && ids[i] <= kMaxId, OutOfRange, "Expected ids between 0 and ", kMaxId, " but ids[", i,
             "] is ", ids[i]);
  check_finite(vectors, n, dim_, "vectors");
  if (storage_ == Storage::F16) {
    for (int64_t i = 0; i < n * dim_; ++i)
      FC_CHECK(std::fabs(vectors[i]) <= 65504.0f, OutOfRange, "Expected values within the fp16 range (|x| <= 65504) for ",
               "an f16 index but vectors[", i / dim_, "][", i % dim_, "] is ", vectors[i]);
  }
  Store& s = writable();
  s.ids.reserve(static_cast<size_t>(s.n + n));
  if (storage_ == Storage::F32) s.f32.reserve(static_cast<size_t>((s.n + n) * dim_));
  else s.f16.reserve(static_cast<size_t>((s.n + n) * dim_));
  for (int64_t i = 0; i < n; ++i) append_row(ids[i], vectors + i * dim_);
}

void Index::add_raw(const int64_t* ids, const void* data, int64_t n) {
  FC_CHECK(n >= 0, InvalidArgument, "Expected a row count >= 0 but received ", n);
  if (n == 0) return;
  FC_CHECK(ids && data, InvalidArgument, "Expected ids and data");
  for (int64_t i = 0; i < n; ++i)
    FC_CHECK(ids[i] >= 0 && ids[i] <= kMaxId, CorruptFile, "Expected ids between 0 and ", kMaxId, " but row ", i,
             " has id ", ids[i]);
  const size_t D = static_cast<size_t>(dim_);
  if (storage_ == Storage::F32) {
    check_finite(static_cast<const float*>(data), n, dim_, "rows");
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(data);
    for (int64_t i = 0; i < n * dim_; ++i)
      FC_CHECK((h[i] & 0x7c00u) != 0x7c00u, CorruptFile, "Expected finite fp16 values but row ", i / dim_, " has ",
               "a non-finite one");
  }
  Store& s = writable();
  for (int64_t i = 0; i < n; ++i) {
    if (storage_ == Storage::F32) {
      const float* v = static_cast<const float*>(data) + i * D;
      s.f32.insert(s.f32.end(), v, v + D);
    } else {
      const uint16_t* v = static_cast<const uint16_t*>(data) + i * D;
      s.f16.insert(s.f16.end(), v, v + D);
    }
    s.ids.push_back(ids[i]);
    rows_of_[ids[i]].push_back(s.n);
    ++s.n;
  }
}

void Index::remove_row(int64_t r) {
  Store& s = *store_;
  const int64_t last = s.n - 1;
  const size_t D = static_cast<size_t>(dim_);
  if (r != last) {
    const int64_t moved = s.ids[last];
    if (storage_ == Storage::F32) std::memcpy(&s.f32[r * D], &s.f32[last * D], D * sizeof(float));
    else std::memcpy(&s.f16[r * D], &s.f16[last * D], D * sizeof(uint16_t));
    s.ids[r] = moved;
    for (int64_t& x : rows_of_[moved])
      if (x == last) x = r;
  }
  // Zero the vacated tail before shrinking: the bytes of a removed vector do not linger in memory.
  if (storage_ == Storage::F32) {
    std::memset(&s.f32[last * D], 0, D * sizeof(float));
    s.f32.resize(last * D);
  } else {
    std::memset(&s.f16[last * D], 0, D * sizeof(uint16_t));
    s.f16.resize(last * D);
  }
  s.ids.pop_back();
  s.n = last;
}

int64_t Index::remove(const int64_t* ids, int64_t n) {
  FC_CHECK(n >= 0, InvalidArgument, "Expected a count >= 0 but received ", n);
  int64_t any = 0;
  for (int64_t i = 0; i < n; ++i) any += rows_of_.count(ids[i]);
  if (any == 0) return 0;
  writable();
  int64_t removed = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto it = rows_of_.find(ids[i]);
    if (it == rows_of_.end()) continue;
    // Highest row first: remove_row moves the last row down, which must not be one of these.
    std::vector<int64_t> rows = it->second;
    rows_of_.erase(it);
    std::sort(rows.rbegin(), rows.rend());
    for (int64_t r : rows) remove_row(r);
    removed += static_cast<int64_t>(rows.size());
  }
  return removed;
}

void Index::update(int64_t id, const float* vector) {
  FC_CHECK(rows_of_.count(id) != 0, OutOfRange, "Expected an id in the index for update but ", id, " is not in it");
  check_finite(vector, 1, dim_, "vector");
  if (storage_ == Storage::F16)
    for (int64_t d = 0; d < dim_; ++d)
      FC_CHECK(std::fabs(vector[d]) <= 65504.0f, OutOfRange, "Expected values within the fp16 range for an f16 index");
  remove(&id, 1);
  append_row(id, vector);  // remove() made the store writable
}

std::vector<uint64_t> Index::allow_bitmap(const int64_t* ids, int64_t n) const {
  std::vector<uint64_t> bits(static_cast<size_t>((store_->n + 63) / 64), 0);
  for (int64_t i = 0; i < n; ++i) {
    auto it = rows_of_.find(ids[i]);
    if (it == rows_of_.end()) continue;
    for (int64_t r : it->second) bits[r >> 6] |= uint64_t(1) << (r & 63);
  }
  return bits;
}

std::shared_ptr<const Store> Index::means_of(const Store& s) {
  auto out = std::make_shared<Store>();
  out->dim = s.dim;
  out->storage = s.storage;
  const size_t D = static_cast<size_t>(s.dim);
  // Rows grouped by id, ids ascending (a stable order for the output).
  std::vector<int64_t> order(static_cast<size_t>(s.n));
  for (int64_t i = 0; i < s.n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s.ids[a] < s.ids[b]; });
  std::vector<double> acc(D);
  for (size_t i = 0; i < order.size();) {
    const int64_t id = s.ids[order[i]];
    std::fill(acc.begin(), acc.end(), 0.0);
    size_t j = i;
    for (; j < order.size() && s.ids[order[j]] == id; ++j) {
      const int64_t r = order[j];
      for (size_t d = 0; d < D; ++d)
        acc[d] += s.storage == Storage::F32 ? s.f32[r * D + d] : f16_to_f32(s.f16[r * D + d]);
    }
    double nrm = 0;
    for (double x : acc) nrm += x * x;
    nrm = std::sqrt(nrm);
    const double inv = nrm > 0 ? 1.0 / nrm : 0.0;
    for (size_t d = 0; d < D; ++d) {
      const float v = static_cast<float>(acc[d] * inv);
      if (s.storage == Storage::F32) out->f32.push_back(v);
      else out->f16.push_back(f32_to_f16(v));
    }
    out->ids.push_back(id);
    ++out->n;
    i = j;
  }
  return out;
}

}  // namespace search
}  // namespace fc
