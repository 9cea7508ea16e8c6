// Network namespaces seen from the agent: the cookie the kernel gives a namespace (the value
// bpf_get_netns_cookie() returns in the programs) and the addresses configured in it, so that a
// namespace can be matched to the workload whose IP it holds. The calling thread enters the
// namespace for a moment and always comes back; if it could not come back the process aborts
// rather than go on in another pod's network.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace smbpf {

namespace {

struct NetnsInfo {
  uint64_t cookie = 0;
  std::vector<std::string> addrs;
  int err = 0;
  std::string what;
};

// Runs in the target namespace; returns with err set instead of throwing (we must get back first).
void ReadHere(NetnsInfo& out) {
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    out.err = errno;
    out.what = "socket";
    return;
  }
  socklen_t len = sizeof(out.cookie);
  if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &out.cookie, &len) < 0) {
    out.err = errno;
    out.what = "getsockopt(SO_NETNS_COOKIE)";
    close(s);
    return;
  }
  close(s);
  struct ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) < 0) {
    out.err = errno;
    out.what = "getifaddrs";
    return;
  }
  for (struct ifaddrs* p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr) continue;
    char buf[INET6_ADDRSTRLEN];
    if (p->ifa_addr->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(p->ifa_addr)->sin_addr, buf, sizeof(buf));
    } else if (p->ifa_addr->sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<struct sockaddr_in6*>(p->ifa_addr)->sin6_addr, buf, sizeof(buf));
    } else {
      continue;
    }
    out.addrs.emplace_back(buf);
  }
  freeifaddrs(ifa);
}

Napi::Value NetnsInfoOf(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "netns_info");
  std::string path = ArgString(info, 0, op, "path");
  op.subject = "path=" + path;
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) op.Fail(errno);
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int e = errno;
    close(target);
    op.Fail(e, "opening this thread's own namespace");
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    close(self);
    op.Fail(e, "setns");
  }
  NetnsInfo out;
  ReadHere(out);
  if (setns(self, CLONE_NEWNET) < 0) {
    std::fprintf(stderr, "sockmesh: cannot return to the agent's own network namespace (errno %d); aborting\n", errno);
    std::abort();
  }
  close(target);
  close(self);
  if (out.err) op.Fail(out.err, out.what);
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  res.Set("cookie", Napi::BigInt::New(env, out.cookie));
  Napi::Array addrs = Napi::Array::New(env, out.addrs.size());
  for (size_t i = 0; i < out.addrs.size(); i++) addrs.Set(static_cast<uint32_t>(i), Napi::String::New(env, out.addrs[i]));
  res.Set("addrs", addrs);
  return res;
}

// The process at the other end of a connected unix socket, as the kernel recorded it when that
// end connected or listened (SO_PEERCRED): the pid is in this process's pid namespace, 0 when the
// peer's is not visible from here.
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "peer_cred");
  int fd = ArgFd(info, 0, op, "fd");
  op.subject = "fd=" + std::to_string(fd);
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) op.Fail(errno);
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  res.Set("pid", Napi::Number::New(env, cred.pid));
  res.Set("uid", Napi::Number::New(env, cred.uid));
  res.Set("gid", Napi::Number::New(env, cred.gid));
  return res;
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("netnsInfo", Napi::Function::New(env, NetnsInfoOf, "netnsInfo"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
}

}  // namespace smbpf
