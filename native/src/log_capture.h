// Captures libbpf's print output for the duration of one open/load call.
//
// libbpf_set_print is process-wide, so a single callback is installed once and
// routes each message to the capture active on the calling thread (if any).
// That keeps captures separate even if worker threads load objects.
#pragma once

#include <string>

namespace smbpf {

class LogCapture {
 public:
  explicit LogCapture(bool debug);
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  const std::string& text() const { return buf_; }

  static void InstallOnce();
  // Returns the last `max` bytes of s, cut at a line start when possible.
  static std::string Tail(const std::string& s, size_t max);

  void Append(const char* s, size_t n);
  bool debug() const { return debug_; }

 private:
  std::string buf_;
  bool debug_;
  LogCapture* prev_;
};

}  // namespace smbpf
