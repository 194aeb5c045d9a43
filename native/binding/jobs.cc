// @file jobs.cc
// @brief Promise-returning jobs on the device queues, completed through one thread-safe function.
#include <atomic>

#include "addon.h"

namespace fcb {

EnvData* env_data(Napi::Env env) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (d) return d;
  d = new EnvData();
  auto ch = std::make_shared<Channel>();
  ch->tsfn = Tsfn::New(env, "facecuda", 0, 1);
  ch->tsfn.Unref(env);  // no pending jobs: do not keep the process alive
  d->channel = ch;
  env.SetInstanceData<EnvData>(d);
  env.AddCleanupHook([ch]() {
    std::lock_guard<std::mutex> lk(ch->mu);
    ch->open = false;
    ch->tsfn.Abort();
  });
  return d;
}

void call_js(Napi::Env env, Napi::Function, void*, Job* job) {
  std::unique_ptr<Job> owned(job);
  if (env == nullptr) {  // the env is going away: its handles are gone, so leak rather than free
    owned.release();
    return;
  }
  // Nothing may escape into Node: while a worker thread's env shuts down, JS can no longer run and
  // every N-API call here can fail (node-addon-api then throws: Unref included, which used to sit
  // outside this try and could end the process with std::terminate). Settling the promise is then moot.
  try {
    EnvData* d = env.GetInstanceData<EnvData>();
    if (d && d->pending > 0 && --d->pending == 0) d->channel->tsfn.Unref(env);
    Napi::HandleScope scope(env);
    if (owned->error) {
      owned->deferred.Reject(make_error(env, owned->error));
      return;
    }
    try {
      Napi::Value v = owned->build ? owned->build(env) : env.Undefined();
      owned->deferred.Resolve(v);
    } catch (const Napi::Error& e) {
      owned->deferred.Reject(e.Value());
    } catch (...) {
      owned->deferred.Reject(make_error(env, std::current_exception()));
    }
  } catch (...) {
  }
}

Napi::Promise schedule(Napi::Env env, const fc::Device& device, std::unique_ptr<Job> job) {
  EnvData* d = env_data(env);
  Napi::Promise promise = job->deferred.Promise();
  if (d->pending++ == 0) d->channel->tsfn.Ref(env);
  Job* raw = job.release();
  std::shared_ptr<Channel> ch = d->channel;
  auto work = std::move(raw->work);
  try {
    fc::queue_for(device).submit(std::move(work), [raw, ch](std::exception_ptr e) {
      raw->error = e;
      // After the env's cleanup the job's JS handles cannot be freed off-thread, so it leaks.
      std::lock_guard<std::mutex> lk(ch->mu);
      if (ch->open) ch->tsfn.NonBlockingCall(raw);
    });
  } catch (...) {
    if (--d->pending == 0) d->channel->tsfn.Unref(env);
    raw->deferred.Reject(make_error(env, std::current_exception()));
    delete raw;
  }
  return promise;
}

void post(const fc::Device& device, std::function<void()> task) {
  try {
    fc::queue_for(device).submit(std::move(task), nullptr);
  } catch (...) {
  }
}

}  // namespace fcb
