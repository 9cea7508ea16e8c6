#include "log_capture.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace smbpf {

namespace {

thread_local LogCapture* tl_current = nullptr;

// Verifier logs of big programs reach megabytes; only the tail is ever shown,
// so bound memory while keeping far more than the 16 KiB that is reported.
constexpr size_t kMaxCapture = 1 << 20;

bool EnvFlag(const char* name) {
  const char* v = getenv(name);
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

int Print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  LogCapture* cap = tl_current;
  static const bool debug_env = EnvFlag("SOCKMESH_LIBBPF_DEBUG");
  if (cap == nullptr) {
    // Outside open/load libbpf rarely prints; keep warnings visible like its
    // default printer does, but drop its chatter unless asked for.
    if (level == LIBBPF_WARN || debug_env) return vfprintf(stderr, fmt, ap);
    return 0;
  }
  if (level == LIBBPF_DEBUG && !cap->debug() && !debug_env) return 0;
  char small[1024];
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(small, sizeof(small), fmt, copy);
  va_end(copy);
  if (n < 0) return n;
  if (static_cast<size_t>(n) < sizeof(small)) {
    cap->Append(small, static_cast<size_t>(n));
  } else {
    std::string big(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(&big[0], big.size(), fmt, ap);
    cap->Append(big.data(), static_cast<size_t>(n));
  }
  return n;
}

}  // namespace

LogCapture::LogCapture(bool debug) : debug_(debug), prev_(tl_current) { tl_current = this; }

LogCapture::~LogCapture() { tl_current = prev_; }

void LogCapture::Append(const char* s, size_t n) {
  buf_.append(s, n);
  if (buf_.size() > 2 * kMaxCapture) buf_.erase(0, buf_.size() - kMaxCapture);
}

void LogCapture::InstallOnce() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(Print); });
}

std::string LogCapture::Tail(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t start = s.size() - max;
  size_t nl = s.find('\n', start);
  if (nl != std::string::npos && nl + 1 < s.size() && nl - start < 512) start = nl + 1;
  return "[...truncated...]\n" + s.substr(start);
}

}  // namespace smbpf
