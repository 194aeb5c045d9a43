// @file dynlib.cc
// @brief The dlopen search of dynlib.h: candidates in the documented order, preloading, and a record
// of every attempt. Pure host code (no CUDA calls), so it is tested on machines without a GPU.
#include "cuda/dynlib.h"

#include <dlfcn.h>
#include <glob.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

namespace fc {
namespace cuda {
namespace dyn {

const char* process_env(const char* name) { return std::getenv(name); }

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf)) return buf;
  return p;
}

std::string parent(const std::string& p) {
  size_t slash = p.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Matches of a glob pattern; with `newest_first`, in descending version order (python3.12 before
// python3.9, cuda-13.0 before cuda-12.8).
std::vector<std::string> glob_paths(const std::string& pattern, bool newest_first) {
  std::vector<std::string> out;
  glob_t g;
  std::memset(&g, 0, sizeof(g));
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
  }
  globfree(&g);
  std::sort(out.begin(), out.end(), [newest_first](const std::string& a, const std::string& b) {
    int c = strverscmp(a.c_str(), b.c_str());
    return newest_first ? c > 0 : c < 0;
  });
  return out;
}

std::string last_dlerror(const char* fallback) {
  const char* e = dlerror();
  return e ? e : fallback;
}

class Search {
 public:
  Search(const LibSpec& spec, const EnvFn& env, Opened& out) : spec_(spec), env_(env), out_(out) {}

  void run() {
    explicit_locations();
    if (!done_) default_loader();
    if (!done_) python_locations();
    if (!done_) toolkit_locations();
    if (!done_) {
      size_t n = out_.tried.size();
      out_.error = str_cat(spec_.soname, " was not found or not usable (", n, n == 1 ? " place" : " places",
                           " tried; set ", spec_.path_env.empty() ? std::string() : spec_.path_env + " or ",
                           "FACECUDA_CUDA_LIB_DIRS to its directory)");
    }
  }

 private:
  template <typename... T>
  static std::string str_cat(const T&... parts) {
    std::string s;
    (append(s, parts), ...);
    return s;
  }
  static void append(std::string& s, const std::string& v) { s += v; }
  static void append(std::string& s, const char* v) { s += v; }
  static void append(std::string& s, size_t v) { s += std::to_string(v); }

  const char* env(const char* name) const {
    const char* v = env_ ? env_(name) : nullptr;
    return v && *v ? v : nullptr;
  }

  void record(const std::string& origin, const std::string& what) { out_.tried.push_back("[" + origin + "] " + what); }

  // ---- 1. explicit
  void explicit_locations() {
    if (!spec_.path_env.empty()) {
      if (const char* p = env(spec_.path_env.c_str())) {
        std::string v = p;
        if (is_dir(v)) try_dir(spec_.path_env, v);
        else if (exists(v)) try_file(spec_.path_env, v, parent(real_path(v)));
        else record(spec_.path_env, v + ": no such file or directory");
      }
    }
    if (done_) return;
    if (const char* dirs = env("FACECUDA_CUDA_LIB_DIRS")) {
      for (const std::string& d : split(dirs, ':')) {
        if (try_dir("FACECUDA_CUDA_LIB_DIRS", d)) return;
      }
    }
  }

  // ---- 2. default loader
  void default_loader() {
    const std::string origin = "default loader";
    dlerror();
    void* h = dlopen(spec_.soname.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      record(origin, last_dlerror("dlopen failed"));
      return;
    }
    std::string path = loaded_path(h);
    std::string missing;
    if (!has_symbols(h, &missing)) {
      record(origin, (path.empty() ? spec_.soname : path) + ": loaded but " + missing);
      return;
    }
    std::string dir = path.empty() ? std::string() : parent(path);
    if (!dir.empty()) {
      seen_dirs_.insert(real_path(dir));
      preload(dir);  // for cuDNN: its sub-libraries, before cudnnCreate
    }
    succeed(origin, h, path, dir);
  }

  // ---- 3. Python site-packages
  void python_locations() {
    std::vector<std::pair<std::string, std::string>> prefixes;  // (origin, prefix)
    if (const char* v = env("VIRTUAL_ENV")) prefixes.push_back({"python: $VIRTUAL_ENV", v});
    if (const char* v = env("CONDA_PREFIX")) prefixes.push_back({"python: $CONDA_PREFIX", v});
    if (const char* path = env("PATH")) {
      for (const char* name : {"python3", "python"}) {
        for (const std::string& d : split(path, ':')) {
          std::string f = d + "/" + name;
          if (access(f.c_str(), X_OK) != 0 || is_dir(f)) continue;
          prefixes.push_back({"python: " + f, parent(d)});
          std::string r = real_path(f);
          if (r != f) prefixes.push_back({"python: " + f + " -> " + r, parent(parent(r))});
          // pyenv: PATH holds <root>/shims/python3, a script; the interpreters are <root>/versions/*.
          if (d.size() >= 6 && d.compare(d.size() - 6, 6, "/shims") == 0) {
            for (const std::string& v : glob_paths(parent(d) + "/versions/*", true)) prefixes.push_back({"python: pyenv", v});
          }
          break;
        }
      }
    }
    if (const char* home = env("HOME")) prefixes.push_back({"python: ~/.local", std::string(home) + "/.local"});
    prefixes.push_back({"python: /usr/local", "/usr/local"});
    prefixes.push_back({"python: /usr", "/usr"});

    std::set<std::string> seen_prefix;
    for (const auto& op : prefixes) {
      if (done_) return;
      const std::string& origin = op.first;
      std::string prefix = real_path(op.second);
      if (!seen_prefix.insert(prefix).second) continue;
      std::vector<std::string> sites = glob_paths(prefix + "/lib/python3*/site-packages", true);
      for (const std::string& s : glob_paths(prefix + "/lib/python3*/dist-packages", true)) sites.push_back(s);
      if (sites.empty()) {
        record(origin, prefix + "/lib/python3*/{site,dist}-packages: no match");
        continue;
      }
      for (const std::string& site : sites) {
        std::string nv = site + "/nvidia";
        if (!is_dir(nv)) {
          record(origin, nv + ": no such directory");
          continue;
        }
        for (const std::string& sub : spec_.pip_dirs) {
          if (try_dir(origin, nv + "/" + sub + "/lib")) return;
        }
      }
    }
  }

  // ---- 4. CUDA toolkit and system directories
  void toolkit_locations() {
    std::vector<std::pair<std::string, std::string>> dirs;
    for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
      if (const char* v = env(var)) dirs.push_back({std::string("$") + var, std::string(v) + "/lib64"});
    }
    dirs.push_back({"CUDA toolkit", "/usr/local/cuda/lib64"});
    for (const std::string& d : glob_paths("/usr/local/cuda-*", true)) dirs.push_back({"CUDA toolkit", d + "/lib64"});
    dirs.push_back({"system", "/usr/lib/x86_64-linux-gnu"});
    for (const auto& od : dirs) {
      if (try_dir(od.first, od.second)) return;
    }
  }

  // ---- attempts
  bool try_dir(const std::string& origin, const std::string& dir) {
    if (done_) return true;
    if (!is_dir(dir)) {
      record(origin, dir + ": no such directory");
      return false;
    }
    if (!seen_dirs_.insert(real_path(dir)).second) return false;  // already looked there
    std::string file = dir + "/" + spec_.soname;
    if (!exists(file)) {
      record(origin, file + ": not present");
      return false;
    }
    return try_file(origin, file, dir);
  }

  bool try_file(const std::string& origin, const std::string& file, const std::string& dir) {
    seen_dirs_.insert(real_path(dir));
    preload(dir);
    dlerror();
    void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      record(origin, last_dlerror("dlopen failed"));
      return false;
    }
    std::string missing;
    if (!has_symbols(h, &missing)) {
      record(origin, file + ": loaded but " + missing);
      return false;
    }
    std::string path = loaded_path(h);
    succeed(origin, h, path.empty() ? real_path(file) : path, dir);
    return true;
  }

  bool has_symbols(void* h, std::string* missing) {
    for (const std::string& sym : spec_.required_symbols) {
      std::string err;
      if (!find_symbol(h, sym.c_str(), &err)) {
        *missing = "lacks " + sym + " (" + err + ")";
        return false;
      }
    }
    return true;
  }

  void succeed(const std::string& origin, void* h, const std::string& path, const std::string& dir) {
    record(origin, "loaded " + path);
    out_.handle = h;
    out_.path = path;
    out_.dir = dir.empty() ? parent(path) : dir;
    done_ = true;
  }

  void preload_file(const std::string& file) {
    dlerror();
    void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL);
    record("preload", h ? file + ": loaded" : last_dlerror("dlopen failed"));
  }

  void preload(const std::string& dir) {
    for (const std::string& so : spec_.preload) {
      std::string f = dir + "/" + so;
      if (exists(f) && preloaded_.insert(real_path(f)).second) preload_file(f);
    }
    if (!spec_.cudnn_sublibraries) return;
    // libnvrtc for the runtime-compiled engines: the same directory, or nvidia/cu13/lib beside
    // nvidia/cudnn/lib in a pip layout. Its builtins first (nvrtc opens them by soname).
    for (const std::string& d : {dir, dir + "/../../cu13/lib"}) {
      if (!exists(d + "/libnvrtc.so.13")) continue;
      for (const std::string& f : glob_paths(d + "/libnvrtc-builtins.so.13*", false)) {
        if (preloaded_.insert(real_path(f)).second) preload_file(f);
      }
      std::string f = d + "/libnvrtc.so.13";
      if (preloaded_.insert(real_path(f)).second) preload_file(f);
      break;
    }
    // Sub-libraries in dependency order (graph first); the rest after, alphabetically; a second pass
    // retries what failed because a dependency was not loaded yet.
    static const char* const kOrder[] = {"graph", "ops", "cnn", "adv", "heuristic", "engines_precompiled",
                                         "engines_runtime_compiled"};
    std::vector<std::string> files;
    for (const char* n : kOrder) {
      std::string f = dir + "/libcudnn_" + n + ".so.9";
      if (exists(f)) files.push_back(f);
    }
    for (const std::string& f : glob_paths(dir + "/libcudnn_*.so.9", false)) {
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
    std::vector<std::string> failed;
    for (const std::string& f : files) {
      if (preloaded_.count(real_path(f))) continue;
      dlerror();
      void* h = dlopen(f.c_str(), RTLD_NOW | RTLD_GLOBAL);
      if (h) {
        preloaded_.insert(real_path(f));
        record("preload", f + ": loaded");
      } else {
        dlerror();
        failed.push_back(f);
      }
    }
    for (const std::string& f : failed) {
      preloaded_.insert(real_path(f));
      preload_file(f);  // second pass: records the dlerror if it still fails
    }
  }

  const LibSpec& spec_;
  const EnvFn& env_;
  Opened& out_;
  bool done_ = false;
  std::set<std::string> seen_dirs_;
  std::set<std::string> preloaded_;
};

}  // namespace

Opened open_library(const LibSpec& spec, const EnvFn& env) {
  Opened out;
  Search(spec, env, out).run();
  return out;
}

void* find_symbol(void* handle, const char* name, std::string* error) {
  dlerror();
  void* p = dlsym(handle, name);
  if (!p && error) *error = last_dlerror("symbol not found");
  return p;
}

std::string loaded_path(void* handle) {
  struct link_map* lm = nullptr;
  if (!handle || dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm || !lm->l_name || !*lm->l_name) return "";
  return real_path(lm->l_name);
}

}  // namespace dyn
}  // namespace cuda
}  // namespace fc
