// @file search.cc
// @brief NativeSearchIndex: the JS handle of an fc::search::Index (lib/search/index.ts wraps it).
//
// Mutations (add, addRaw, remove, update) run on the JS thread: they are copies of the caller's
// vectors into the index, never a search. Searches and the export for save() are jobs on the
// device's queue: each takes a snapshot of the rows (a shared_ptr, no copy) when it is called, so it
// sees the index as it was then; a mutation while a search still holds the snapshot copies the rows
// first (copy-on-write, facecuda/search.h), so the JS thread never waits for a search.
//
// CUDA: the job uploads the snapshot to the device the first time a version of the index is searched
// there (cached, one version at a time) and runs fc::search::topk_cuda. Range search runs on the
// host snapshot on every device.
//
// Ids cross as Float64Array (integers in [0, 2^53 - 1]); the TS layer validates every argument first,
// the checks here are the cheap re-checks that keep a direct call from crashing the process.
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "addon.h"
#include "facecuda/cuda.h"
#include "facecuda/search.h"

namespace fcb {

namespace {

namespace fs = fc::search;

const napi_type_tag kSearchTag = {0x6c3f0e8a44d56b72ULL, 0xaf8b7e6d5c4b3a2aULL};

std::vector<int64_t> arg_ids(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(info.Env(), std::string("Expected a Float64Array for ") + name);
  Napi::Float64Array a = info[i].As<Napi::Float64Array>();
  std::vector<int64_t> out(a.ElementLength());
  for (size_t j = 0; j < out.size(); ++j) {
    const double d = a[j];
    if (!(d >= 0 && d <= 9007199254740991.0) || d != std::floor(d))
      throw Napi::TypeError::New(info.Env(), std::string("Expected integer ids in [0, 2^53 - 1] for ") + name);
    out[j] = static_cast<int64_t>(d);
  }
  return out;
}

// A Float32Array argument of exactly `len` elements (len < 0: any length), copied.
std::vector<float> arg_f32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), std::string("Expected a Float32Array for ") + name);
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (len >= 0 && static_cast<int64_t>(a.ElementLength()) != len)
    fc::fail(fc::Code::ShapeMismatch, fc::str("Expected ", len, " values in ", name, " but received ", a.ElementLength()));
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double d = arg_number(info, i, name);
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
    throw Napi::TypeError::New(info.Env(), std::string("Expected an integer for ") + name);
  return static_cast<int64_t>(d);
}

enum class Aggregate { None, Max, Mean };
Aggregate parse_aggregate(const std::string& s) {
  if (s == "none") return Aggregate::None;
  if (s == "max") return Aggregate::Max;
  if (s == "mean") return Aggregate::Mean;
  fc::fail(fc::Code::InvalidArgument, fc::str("Expected 'none', 'max' or 'mean' for aggregate but received '", s, "'"));
}

Napi::Float64Array ids_array(Napi::Env env, const std::vector<int64_t>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = static_cast<double>(v[i]);
  return a;
}

Napi::Float32Array f32_array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

// State shared by the JS wrap and its jobs (any queue thread): the per-id means and the device copy
// of the rows, each cached for one version of the index.
struct Caches {
  std::mutex mu;
  uint64_t means_version = ~uint64_t(0);
  std::shared_ptr<const fs::Store> means;
  uint64_t dev_version = ~uint64_t(0);
  bool dev_means = false;
  std::shared_ptr<fs::DeviceGallery> dev;

  std::shared_ptr<const fs::Store> means_for(const std::shared_ptr<const fs::Store>& s, uint64_t version) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (means && means_version == version) return means;
    }
    auto m = fs::Index::means_of(*s);  // outside the lock: O(n * dim)
    std::lock_guard<std::mutex> lk(mu);
    means = m;
    means_version = version;
    return m;
  }
  // Call on the device's queue thread.
  std::shared_ptr<fs::DeviceGallery> device_for(int device, const fs::Store& s, uint64_t version, bool is_means) {
    std::lock_guard<std::mutex> lk(mu);
    if (dev && dev_version == version && dev_means == is_means) return dev;
    dev.reset();  // free the old copy first: two galleries may not fit
    dev = std::make_shared<fs::DeviceGallery>(device, s);
    dev_version = version;
    dev_means = is_means;
    return dev;
  }
};

class NativeSearchIndex : public Napi::ObjectWrap<NativeSearchIndex> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeSearchIndex",
                       {InstanceMethod<&NativeSearchIndex::Add>("add"),
                        InstanceMethod<&NativeSearchIndex::AddRaw>("addRaw"),
                        InstanceMethod<&NativeSearchIndex::Remove>("remove"),
                        InstanceMethod<&NativeSearchIndex::Update>("update"),
                        InstanceMethod<&NativeSearchIndex::Contains>("contains"),
                        InstanceMethod<&NativeSearchIndex::Stats>("stats"),
                        InstanceMethod<&NativeSearchIndex::Search>("search"),
                        InstanceMethod<&NativeSearchIndex::SearchRange>("searchRange"),
                        InstanceMethod<&NativeSearchIndex::Export>("exportRows"),
                        InstanceMethod<&NativeSearchIndex::Dispose>("dispose")});
  }

  // new NativeSearchIndex(dim, storage: 'f32' | 'f16', device: 'cpu' | 'cuda:N')
  explicit NativeSearchIndex(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSearchIndex>(info) {
    Napi::Env env = info.Env();
    try {
      const int64_t dim = arg_int(info, 0, "dim");
      const std::string st = arg_string(info, 1, "storage");
      FC_CHECK(st == "f32" || st == "f16", InvalidArgument, "Expected 'f32' or 'f16' for storage but received '", st, "'");
      device_ = arg_device(info, 2, "device");
      if (device_.is_cuda()) fc::cuda::require_device(device_.index);
      index_ = std::make_unique<fs::Index>(dim, st == "f16" ? fs::Storage::F16 : fs::Storage::F32);
      caches_ = std::make_shared<Caches>();
      Value().TypeTag(&kSearchTag);
    } catch (...) {
      rethrow_as_js(env);
    }
  }

 private:
  fs::Index& live(Napi::Env env) {
    if (!index_) throw_error(env, "DISPOSED", "this index has been disposed");
    return *index_;
  }

  // add(ids: Float64Array, vectors: Float32Array)
  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      std::vector<int64_t> ids = arg_ids(info, 0, "ids");
      std::vector<float> v = arg_f32(info, 1, "vectors", static_cast<int64_t>(ids.size()) * ix.dim());
      ix.add(ids.data(), v.data(), static_cast<int64_t>(ids.size()));
      return Napi::Number::New(env, static_cast<double>(ix.size()));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // addRaw(ids: Float64Array, rows: Uint8Array) — rows already in the storage format (load()).
  Napi::Value AddRaw(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      std::vector<int64_t> ids = arg_ids(info, 0, "ids");
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
        throw Napi::TypeError::New(env, "Expected a Uint8Array for rows");
      Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
      const size_t row = static_cast<size_t>(ix.dim()) * (ix.storage() == fs::Storage::F16 ? 2 : 4);
      FC_CHECK(a.ByteLength() == row * ids.size(), ShapeMismatch, "Expected ", row * ids.size(), " bytes of rows but received ",
               a.ByteLength());
      // Copy to an aligned buffer: the view may start at any byte offset.
      std::vector<uint8_t> tmp(a.Data(), a.Data() + a.ByteLength());
      ix.add_raw(ids.data(), tmp.data(), static_cast<int64_t>(ids.size()));
      return Napi::Number::New(env, static_cast<double>(ix.size()));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // remove(ids: Float64Array) → rows removed
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      std::vector<int64_t> ids = arg_ids(info, 0, "ids");
      return Napi::Number::New(env, static_cast<double>(ix.remove(ids.data(), static_cast<int64_t>(ids.size()))));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // update(id: number, vector: Float32Array)
  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      const int64_t id = arg_int(info, 0, "id");
      std::vector<float> v = arg_f32(info, 1, "vector", ix.dim());
      ix.update(id, v.data());
      return env.Undefined();
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  Napi::Value Contains(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      return Napi::Boolean::New(env, live(env).contains(arg_int(info, 0, "id")));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // stats() → { size, numIds, maxRowsPerId }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      Napi::Object o = Napi::Object::New(env);
      o.Set("size", static_cast<double>(ix.size()));
      o.Set("numIds", static_cast<double>(ix.num_ids()));
      o.Set("maxRowsPerId", static_cast<double>(ix.max_rows_per_id()));
      return o;
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  struct Request {
    std::shared_ptr<const fs::Store> snap;
    uint64_t version = 0;
    int64_t max_rows_per_id = 1;
    std::vector<float> queries;
    int64_t Q = 0;
    std::vector<int64_t> filter;  // ids
    bool has_filter = false;
    Aggregate agg = Aggregate::None;
  };

  // Arguments (queries: Float32Array, Q, filter: Float64Array | undefined, aggregate) from index i.
  Request request(const Napi::CallbackInfo& info, fs::Index& ix, size_t qi, size_t fi, size_t ai) {
    Request r;
    r.Q = arg_int(info, qi + 1, "Q");
    FC_CHECK(r.Q >= 0, InvalidArgument, "Expected a query count >= 0 but received ", r.Q);
    r.queries = arg_f32(info, qi, "queries", r.Q * ix.dim());
    fs::check_finite(r.queries.data(), r.Q, ix.dim(), "queries");
    if (!info[fi].IsUndefined()) {
      r.filter = arg_ids(info, fi, "filter");
      r.has_filter = true;
    }
    r.agg = parse_aggregate(arg_string(info, ai, "aggregate"));
    r.snap = ix.snapshot();
    r.version = ix.version();
    r.max_rows_per_id = ix.max_rows_per_id();
    return r;
  }

  // The allow bitmap over the rows of `s` for a list of ids.
  static std::vector<uint64_t> bitmap(const fs::Store& s, const std::vector<int64_t>& ids) {
    std::unordered_set<int64_t> want(ids.begin(), ids.end());
    std::vector<uint64_t> bits(static_cast<size_t>((s.n + 63) / 64), 0);
    for (int64_t r = 0; r < s.n; ++r)
      if (want.count(s.ids[r])) bits[r >> 6] |= uint64_t(1) << (r & 63);
    return bits;
  }

  // search(queries, Q, k, filter?, aggregate) → Promise<{ ids: Float64Array, scores: Float32Array }>
  Napi::Value Search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      auto req = std::make_shared<Request>(request(info, ix, 0, 3, 4));
      const int64_t k = arg_int(info, 2, "k");
      const int64_t max_k = device_.is_cuda() ? fs::kMaxKCuda : fs::kMaxK;
      FC_CHECK(k >= 1 && k <= max_k, OutOfRange, "Expected an integer between 1 and ", max_k, " for k but received ", k);
      auto out = std::make_shared<std::pair<std::vector<int64_t>, std::vector<float>>>();
      auto caches = caches_;
      const fc::Device dev = device_;
      auto job = std::make_unique<Job>(env);
      job->work = [req, out, caches, dev, k]() {
        std::shared_ptr<const fs::Store> s = req->snap;
        const bool means = req->agg == Aggregate::Mean;
        if (means) s = caches->means_for(req->snap, req->version);
        std::vector<uint64_t> allow;
        if (req->has_filter) allow = bitmap(*s, req->filter);
        out->first.resize(static_cast<size_t>(req->Q * k));
        out->second.resize(static_cast<size_t>(req->Q * k));
        const fs::GalleryView g = s->view();
        fs::SearchOptions o;
        o.allow = req->has_filter ? allow.data() : nullptr;
        const bool max_agg = req->agg == Aggregate::Max && req->max_rows_per_id > 1;
        if (dev.is_cuda()) {
          auto dg = caches->device_for(dev.index, *s, req->version, means);
          if (!max_agg) {
            fs::topk_cuda(*dg, req->queries.data(), req->Q, k, out->first.data(), out->second.data(), o.allow);
            return;
          }
          // 'max' over several rows per id: row top-k' on the device, duplicates dropped here.
          const int64_t kr = std::min<int64_t>({std::max<int64_t>(1, s->n), (k - 1) * req->max_rows_per_id + 1, fs::kMaxKCuda});
          FC_CHECK(kr >= std::min<int64_t>(s->n, (k - 1) * req->max_rows_per_id + 1), OutOfRange,
                   "Expected (k - 1) * (most rows per id) + 1 <= ", fs::kMaxKCuda, " for aggregate 'max' on CUDA");
          std::vector<int64_t> ids(static_cast<size_t>(req->Q * kr));
          std::vector<float> sc(static_cast<size_t>(req->Q * kr));
          fs::topk_cuda(*dg, req->queries.data(), req->Q, kr, ids.data(), sc.data(), o.allow);
          for (int64_t q = 0; q < req->Q; ++q) {
            std::unordered_set<int64_t> seen;
            int64_t j = 0;
            for (int64_t c = 0; c < kr && j < k; ++c) {
              const int64_t id = ids[q * kr + c];
              if (id < 0) break;
              if (!seen.insert(id).second) continue;
              out->first[q * k + j] = id;
              out->second[q * k + j] = sc[q * kr + c];
              ++j;
            }
            for (; j < k; ++j) {
              out->first[q * k + j] = -1;
              out->second[q * k + j] = -INFINITY;
            }
          }
          return;
        }
        if (max_agg)
          fs::topk_max_per_id_cpu(g, req->max_rows_per_id, req->queries.data(), req->Q, k, out->first.data(),
                                  out->second.data(), o);
        else
          fs::topk_cpu(g, req->queries.data(), req->Q, k, out->first.data(), out->second.data(), o);
      };
      job->build = [out, k](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("ids", ids_array(e, out->first));
        o.Set("scores", f32_array(e, out->second));
        o.Set("k", static_cast<double>(k));
        return o;
      };
      return schedule(env, device_, std::move(job));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // searchRange(queries, Q, minScore, filter?, aggregate) → Promise<{ offsets, ids, scores }>
  Napi::Value SearchRange(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      fs::Index& ix = live(env);
      auto req = std::make_shared<Request>(request(info, ix, 0, 3, 4));
      const double min_score = arg_number(info, 2, "minScore");
      FC_CHECK(!std::isnan(min_score), InvalidArgument, "Expected a number for minScore but received NaN");
      auto out = std::make_shared<fs::RangeResult>();
      auto caches = caches_;
      auto job = std::make_unique<Job>(env);
      job->work = [req, out, caches, min_score]() {
        std::shared_ptr<const fs::Store> s = req->snap;
        if (req->agg == Aggregate::Mean) s = caches->means_for(req->snap, req->version);
        std::vector<uint64_t> allow;
        if (req->has_filter) allow = bitmap(*s, req->filter);
        fs::SearchOptions o;
        o.allow = req->has_filter ? allow.data() : nullptr;
        *out = fs::range_cpu(s->view(), req->queries.data(), req->Q, static_cast<float>(min_score), o);
        if (req->agg == Aggregate::Max && req->max_rows_per_id > 1) {
          // Keep each id's best row (the first one, results being best first).
          fs::RangeResult d;
          d.offsets.assign(out->offsets.size(), 0);
          for (int64_t q = 0; q < req->Q; ++q) {
            std::unordered_set<int64_t> seen;
            for (int64_t i = out->offsets[q]; i < out->offsets[q + 1]; ++i)
              if (seen.insert(out->ids[i]).second) {
                d.ids.push_back(out->ids[i]);
                d.scores.push_back(out->scores[i]);
              }
            d.offsets[q + 1] = static_cast<int64_t>(d.ids.size());
          }
          *out = std::move(d);
        }
      };
      job->build = [out](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("offsets", ids_array(e, out->offsets));
        o.Set("ids", ids_array(e, out->ids));
        o.Set("scores", f32_array(e, out->scores));
        return o;
      };
      // Host work: the CPU queue whatever the index's device.
      return schedule(env, fc::Device::cpu(), std::move(job));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // exportRows() → Promise<{ ids: Float64Array, rows: Buffer }> (rows in the storage format), from a
  // snapshot taken now; the copy is made on the CPU queue thread.
  Napi::Value Export(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      auto snap = live(env).snapshot();
      struct Out {
        uint8_t* rows = nullptr;
        size_t bytes = 0;
        ~Out() { delete[] rows; }
      };
      auto out = std::make_shared<Out>();
      auto job = std::make_unique<Job>(env);
      job->work = [snap, out]() {
        out->bytes = static_cast<size_t>(snap->n) * snap->row_bytes();
        out->rows = new uint8_t[out->bytes > 0 ? out->bytes : 1];
        const void* src = snap->storage == fs::Storage::F32 ? static_cast<const void*>(snap->f32.data())
                                                              : static_cast<const void*>(snap->f16.data());
        if (out->bytes) std::memcpy(out->rows, src, out->bytes);
      };
      job->build = [snap, out](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("ids", ids_array(e, snap->ids));
        uint8_t* p = out->rows;
        out->rows = nullptr;  // ownership moves to the Buffer
        o.Set("rows", Napi::Buffer<uint8_t>::New(e, p, out->bytes, [](Napi::Env, uint8_t* d) { delete[] d; }));
        return o;
      };
      return schedule(env, fc::Device::cpu(), std::move(job));
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  // dispose(): frees the rows (searches in flight keep their snapshot until they finish).
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    index_.reset();
    if (caches_) {
      auto c = std::move(caches_);
      // The device copy is freed on its queue, after the searches already queued there.
      if (device_.is_cuda()) post(device_, [c]() mutable { c.reset(); });
    }
    return info.Env().Undefined();
  }

  std::unique_ptr<fs::Index> index_;
  std::shared_ptr<Caches> caches_;
  fc::Device device_;
};

}  // namespace

void register_search(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeSearchIndex", NativeSearchIndex::Init(env));
}

}  // namespace fcb
