// Plain fd and bpffs helpers: enough to get cgroup fds, keep program fds past
// bpf_object__close (dup) and manage pins without shelling out.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>

#include "common.h"

namespace smbpf {

namespace {

Napi::Value OpenPath(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "open");
  std::string path = ArgString(info, 0, op, "path");
  op.subject = "path=" + path;
  uint32_t flags = ArgU32Or(info, 1, op, "flags", O_RDONLY);
  // Always close-on-exec: these fds pin kernel objects and must not leak into
  // child processes the agent spawns.
  int fd = open(path.c_str(), static_cast<int>(flags) | O_CLOEXEC);
  if (fd < 0) op.Fail(errno);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "close");
  int fd = ArgFd(info, 0, op, "fd");
  op.subject = "fd=" + std::to_string(fd);
  // Closing stdio would silently redirect later output into whatever reuses it.
  if (fd <= 2) op.Invalid("refusing to close stdio fd");
  if (close(fd) < 0 && errno != EINTR) op.Fail(errno);
  return info.Env().Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "dup");
  int fd = ArgFd(info, 0, op, "fd");
  op.subject = "fd=" + std::to_string(fd);
  // Start above stdio so a dup never lands on 0-2 if those were closed.
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) op.Fail(errno);
  return Napi::Number::New(info.Env(), nfd);
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "obj_pin");
  int fd = ArgFd(info, 0, op, "fd");
  std::string path = ArgString(info, 1, op, "path");
  op.subject = "fd=" + std::to_string(fd) + ",path=" + path;
  int ret = bpf_obj_pin(fd, path.c_str());
  if (ret < 0) op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "obj_get");
  std::string path = ArgString(info, 0, op, "path");
  op.subject = "path=" + path;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) op.Fail(NegErr(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "statfs");
  std::string path = ArgString(info, 0, op, "path");
  op.subject = "path=" + path;
  struct statfs st;
  if (statfs(path.c_str(), &st) < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Napi::Boolean::New(info.Env(), false);
    op.Fail(errno);
  }
  return Napi::Boolean::New(info.Env(), static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC);
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), libbpf_version_string());
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("openPath", Napi::Function::New(env, OpenPath, "openPath"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("objPin", Napi::Function::New(env, ObjPin, "objPin"));
  exports.Set("objGet", Napi::Function::New(env, ObjGet, "objGet"));
  exports.Set("isBpffs", Napi::Function::New(env, IsBpffs, "isBpffs"));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion, "libbpfVersion"));
}

}  // namespace smbpf
