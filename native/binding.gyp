{
  "targets": [
    {
      "target_name": "sockmesh_bpf",
      "sources": [
        "src/addon.cc",
        "src/consts.cc",
        "src/errors.cc",
        "src/fdpass.cc",
        "src/files.cc",
        "src/log_capture.cc",
        "src/maps.cc",
        "src/netns.cc",
        "src/object.cc",
        "src/probes.cc",
        "src/progs.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
