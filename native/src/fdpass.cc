// Handing sockets from one process to another over a unix socket (SCM_RIGHTS): how a new L7 proxy
// takes over the listening sockets of the one it replaces, so that the kernel's accept queue (and
// every connection waiting in it) never goes away during a restart. Node has no API for ancillary
// data on a plain unix socket, so the receiving side uses a blocking socket made here, used only
// for the short handover at start-up.
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace smbpf {

namespace {

constexpr size_t kMaxFds = 64;
constexpr size_t kMaxBytes = 1 << 20;

// unixConnect(path, timeoutMs): a blocking, close-on-exec stream socket connected to `path`,
// whose reads and writes give up after timeoutMs (EAGAIN).
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "unix_connect");
  std::string path = ArgString(info, 0, op, "path");
  uint32_t timeout_ms = ArgU32Or(info, 1, op, "timeoutMs", 5000);
  op.subject = "path=" + path;
  struct sockaddr_un sa = {};
  if (path.size() >= sizeof(sa.sun_path)) op.Invalid("path longer than a unix socket address allows");
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.data(), path.size());
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) op.Fail(errno, "socket");
  struct timeval tv = {static_cast<time_t>(timeout_ms / 1000), static_cast<suseconds_t>((timeout_ms % 1000) * 1000)};
  if (setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) op.Fail(errno, "SO_RCVTIMEO");
  if (setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) op.Fail(errno, "SO_SNDTIMEO");
  if (connect(s.get(), reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) op.Fail(errno, "connect");
  return Napi::Number::New(info.Env(), s.release());
}

// sendFds(fd, data, fds): one sendmsg of `data` (non-empty) with `fds` attached; returns the
// bytes sent (a short send is the caller's to finish, without fds). Never blocks: on a full
// socket it fails with EAGAIN.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "send_fds");
  int fd = ArgFd(info, 0, op, "fd");
  op.subject = "fd=" + std::to_string(fd);
  Bytes data = ArgBytes(info, 1, op, "data", false);
  if (data.len == 0) op.Invalid("data must not be empty (ancillary data needs at least one byte)");
  std::vector<int> fds;
  if (ArgPresent(info, 2)) {
    if (!info[2].IsArray()) op.Invalid("fds must be an array of file descriptors");
    Napi::Array a = info[2].As<Napi::Array>();
    if (a.Length() > kMaxFds) op.Invalid("too many fds");
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber()) op.Invalid("fds must be numbers");
      double d = v.As<Napi::Number>().DoubleValue();
      if (d < 0 || d > 0x7fffffff || d != static_cast<int>(d)) op.Invalid("fd out of range");
      fds.push_back(static_cast<int>(d));
    }
  }
  struct iovec iov = {const_cast<uint8_t*>(data.data), data.len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())), 0);
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) op.Fail(errno, "sendmsg");
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// recvFds(fd, maxBytes): one recvmsg; {data, fds} (data empty at end of stream). Fds arrive
// close-on-exec and belong to the caller; if more arrive than fit, all are closed and it fails.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "recv_fds");
  int fd = ArgFd(info, 0, op, "fd");
  op.subject = "fd=" + std::to_string(fd);
  uint32_t max_bytes = ArgU32Or(info, 1, op, "maxBytes", 65536);
  if (max_bytes == 0 || max_bytes > kMaxBytes) op.Invalid("maxBytes out of range");
  std::vector<uint8_t> buf(max_bytes);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds), 0);
  struct iovec iov = {buf.data(), buf.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) op.Fail(errno, "recvmsg");
  std::vector<int> fds;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(f);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int f : fds) close(f);
    op.Fail(EMSGSIZE, "more file descriptors than expected (MSG_CTRUNC)");
  }
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  res.Set("data", CopyBuffer(env, buf.data(), static_cast<size_t>(n)));
  Napi::Array a = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  res.Set("fds", a);
  return res;
}

}  // namespace

void InitFdPass(Napi::Env env, Napi::Object exports) {
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
}

}  // namespace smbpf
