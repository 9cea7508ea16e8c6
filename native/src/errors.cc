#include <bpf/libbpf.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <limits>

#include "common.h"

namespace smbpf {

std::string ErrnoName(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  // libbpf's own codes (bad ELF, relocation failure, ...) live above 4000.
  switch (err) {
    case LIBBPF_ERRNO__LIBELF: return "LIBBPF_ERRNO__LIBELF";
    case LIBBPF_ERRNO__FORMAT: return "LIBBPF_ERRNO__FORMAT";
    case LIBBPF_ERRNO__KVERSION: return "LIBBPF_ERRNO__KVERSION";
    case LIBBPF_ERRNO__ENDIAN: return "LIBBPF_ERRNO__ENDIAN";
    case LIBBPF_ERRNO__INTERNAL: return "LIBBPF_ERRNO__INTERNAL";
    case LIBBPF_ERRNO__RELOC: return "LIBBPF_ERRNO__RELOC";
    case LIBBPF_ERRNO__LOAD: return "LIBBPF_ERRNO__LOAD";
    case LIBBPF_ERRNO__VERIFY: return "LIBBPF_ERRNO__VERIFY";
    case LIBBPF_ERRNO__PROG2BIG: return "LIBBPF_ERRNO__PROG2BIG";
    case LIBBPF_ERRNO__KVER: return "LIBBPF_ERRNO__KVER";
    case LIBBPF_ERRNO__WRNGPID: return "LIBBPF_ERRNO__WRNGPID";
    case LIBBPF_ERRNO__INVSEQ: return "LIBBPF_ERRNO__INVSEQ";
    case LIBBPF_ERRNO__NLPARSE: return "LIBBPF_ERRNO__NLPARSE";
    default: break;
  }
  const char* n = strerrorname_np(err);
  if (n != nullptr) return n;
  return "ERRNO_" + std::to_string(err);
}

std::string ErrnoMessage(int err) {
  if (err == kENOTSUPP) return "Operation not supported (kernel ENOTSUPP)";
  char buf[256];
  // libbpf_strerror understands both plain errnos and LIBBPF_ERRNO__*.
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return "Unknown error " + std::to_string(err);
}

namespace {

[[noreturn]] void ThrowError(Napi::Env env, const std::string& message, const std::string& code,
                             int err, const char* op, const std::string* log) {
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object obj;
  if (data != nullptr && !data->errorCtor.IsEmpty()) {
    // BpfError(message, code, errno, op, verifierLog?)
    std::vector<napi_value> args = {Napi::String::New(env, message), Napi::String::New(env, code),
                                    Napi::Number::New(env, err), Napi::String::New(env, op)};
    if (log != nullptr) args.push_back(Napi::String::New(env, *log));
    obj = data->errorCtor.New(args);
  } else {
    obj = Napi::Error::New(env, message).Value();
    obj.Set("code", code);
    obj.Set("errno", err);
    obj.Set("op", op);
    if (log != nullptr) obj.Set("verifierLog", *log);
  }
  throw Napi::Error(env, obj);
}

std::string Header(const Op& op, const std::string& code, int err) {
  std::string msg = op.name;
  msg += "(" + op.subject + "): " + code + ": " + ErrnoMessage(err);
  return msg;
}

}  // namespace

void Op::Fail(int err, const std::string& detail) const {
  if (err <= 0) err = EIO;  // a failure must never surface as errno 0
  std::string code = ErrnoName(err);
  std::string msg = Header(*this, code, err);
  if (!detail.empty()) msg += " (" + detail + ")";
  ThrowError(env, msg, code, err, name, nullptr);
}

void Op::FailWithLog(int err, const std::string& code, const std::string& detail,
                     const std::string& log) const {
  if (err <= 0) err = EIO;
  std::string msg = Header(*this, code, err);
  if (code != ErrnoName(err)) msg += " [" + ErrnoName(err) + "]";
  if (!detail.empty()) msg += " (" + detail + ")";
  if (!log.empty()) msg += "\n--- libbpf/verifier log (tail) ---\n" + log;
  ThrowError(env, msg, code, err, name, &log);
}

void Op::Invalid(const std::string& detail) const { Fail(EINVAL, detail); }

bool ArgPresent(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && !info[i].IsUndefined() && !info[i].IsNull();
}

namespace {

double ArgNumber(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
                 double lo, double hi) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    op.Invalid(std::string(what) + " must be a number");
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < lo || d > hi) {
    op.Invalid(std::string(what) + " must be an integer in range");
  }
  return d;
}

}  // namespace

int ArgFd(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what) {
  return static_cast<int>(
      ArgNumber(info, i, op, what, 0, static_cast<double>(std::numeric_limits<int>::max())));
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what) {
  return static_cast<uint32_t>(ArgNumber(info, i, op, what, 0, 4294967295.0));
}

uint32_t ArgU32Or(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
                  uint32_t dflt) {
  return ArgPresent(info, i) ? ArgU32(info, i, op, what) : dflt;
}

uint64_t ArgU64Or(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
                  uint64_t dflt) {
  if (!ArgPresent(info, i)) return dflt;
  return static_cast<uint64_t>(ArgNumber(info, i, op, what, 0, 9007199254740991.0));
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what) {
  if (i >= info.Length() || !info[i].IsString()) op.Invalid(std::string(what) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  // Paths reach C APIs as NUL-terminated strings; an embedded NUL would
  // silently address a different file.
  if (s.find('\0') != std::string::npos) op.Invalid(std::string(what) + " contains a NUL byte");
  return s;
}

Bytes ValueBytes(const Napi::Value& v, const Op& op, const char* what, bool nullable) {
  Bytes b;
  if (v.IsUndefined() || v.IsNull()) {
    if (!nullable) op.Invalid(std::string(what) + " must be a Buffer");
    return b;
  }
  if (!v.IsTypedArray()) op.Invalid(std::string(what) + " must be a Buffer/Uint8Array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = ta.ArrayBuffer();
  b.data = static_cast<const uint8_t*>(ab.Data()) + ta.ByteOffset();
  b.len = ta.ByteLength();
  b.present = true;
  return b;
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const Op& op, const char* what,
               bool nullable) {
  return ValueBytes(i < info.Length() ? info[i] : info.Env().Undefined(), op, what, nullable);
}

Napi::Buffer<uint8_t> CopyBuffer(Napi::Env env, const uint8_t* data, size_t len) {
  return Napi::Buffer<uint8_t>::Copy(env, data, len);
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "set_error_class");
  if (info.Length() < 1 || !info[0].IsFunction()) op.Invalid("expected a constructor");
  env.GetInstanceData<AddonData>()->errorCtor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace smbpf
