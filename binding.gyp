# node-gyp build of the CPU backend, for machines without CMake. CMakeLists.txt is the full build
# (CPU + CUDA + native tests); both take their source lists from scripts/sources.js.
{
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fPIC", "-Wall", "-Wno-unused-parameter"],
    "include_dirs": ["native/include", "native/src"]
  },
  "targets": [
    {
      "target_name": "facecuda_avx2",
      "type": "static_library",
      "sources": ["<!@(node scripts/sources.js cpu_avx2)"],
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
    },
    {
      "target_name": "facecuda_avx512",
      "type": "static_library",
      "sources": ["<!@(node scripts/sources.js cpu_avx512)"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c"]
    },
    {
      "target_name": "facecuda",
      "dependencies": ["facecuda_avx2", "facecuda_avx512"],
      "sources": [
        "<!@(node scripts/sources.js common)",
        "<!@(node scripts/sources.js cpu)",
        "<!@(node scripts/sources.js cuda_stub)",
        "<!@(node scripts/sources.js binding)"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "ldflags": ["-Wl,--exclude-libs,ALL", "-pthread"],
      "libraries": ["-ldl"]
    }
  ]
}
