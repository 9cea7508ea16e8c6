// Shared helpers: error construction and strict argument decoding.
//
// All failures leave the addon as a JS error carrying {code, errno, op}. When
// index.ts has registered its BpfError class (setErrorClass) the error is an
// instance of it; otherwise it is a plain Error with the same properties.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace smbpf {

// Kernel-internal errno that leaks to userspace from BPF_DO_BATCH and friends;
// glibc has no name for it.
constexpr int kENOTSUPP = 524;

struct AddonData {
  Napi::FunctionReference errorCtor;   // BpfError from index.ts, may be empty
  Napi::FunctionReference objectCtor;  // NativeBpfObject
};

std::string ErrnoName(int err);
std::string ErrnoMessage(int err);

// Context of one API call, used to label every error it raises.
struct Op {
  Napi::Env env;
  const char* name;
  std::string subject;  // e.g. "fd=12" or "path=/x.o"; filled as args are parsed

  Op(Napi::Env e, const char* n) : env(e), name(n) {}

  // err is a positive errno (or a libbpf error code >= 4000).
  [[noreturn]] void Fail(int err, const std::string& detail = std::string()) const;
  // Like Fail, with an explicit code (e.g. SM_VERIFIER) and an attached log.
  [[noreturn]] void FailWithLog(int err, const std::string& code, const std::string& detail,
                                const std::string& log) const;
  [[noreturn]] void Invalid(const std::string& detail) const;  // EINVAL from argument checks
};

// libbpf >= 1.0 returns -errno from int APIs; pointer APIs return NULL + errno.
inline int NegErr(long ret) { return ret < 0 ? static_cast<int>(-ret) : 0; }

// Argument decoding. Each throws EINVAL (through op) when the value is missing
// or of the wrong type/range, so no bad value ever reaches a syscall.
bool ArgPresent(const Napi::CallbackInfo& info, size_t i);
int ArgFd(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what);
uint32_t ArgU32Or(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
                  uint32_t dflt);
uint64_t ArgU64Or(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
                  uint64_t dflt);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what);

// A borrowed view into a JS Uint8Array/Buffer. Valid only during the call
// (no JS runs in between, so the backing store cannot be detached or moved).
struct Bytes {
  const uint8_t* data = nullptr;
  size_t len = 0;
  bool present = false;  // false when the JS value was null/undefined
};
Bytes ValueBytes(const Napi::Value& v, const Op& op, const char* what, bool nullable);
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
               bool nullable);

Napi::Buffer<uint8_t> CopyBuffer(Napi::Env env, const uint8_t* data, size_t len);

// Owns a file descriptor; used where a temporary fd must not leak on a throw.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

// Module registration hooks, one per source file.
void InitErrors(Napi::Env env, Napi::Object exports);
void InitObject(Napi::Env env, Napi::Object exports);
void InitMaps(Napi::Env env, Napi::Object exports);
void InitProgs(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitNetns(Napi::Env env, Napi::Object exports);
void InitFdPass(Napi::Env env, Napi::Object exports);
void InitConsts(Napi::Env env, Napi::Object exports);
void InitProbes(Napi::Env env, Napi::Object exports);

}  // namespace smbpf
