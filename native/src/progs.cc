// Program attachment (links and legacy attach), queries and info.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common.h"
#include "fdkind.h"

namespace smbpf {

namespace {

Napi::Value LinkCreate(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "link_create");
  int prog_fd = ArgFd(info, 0, op, "progFd");
  int target_fd = ArgFd(info, 1, op, "targetFd");
  uint32_t attach_type = ArgU32(info, 2, op, "attachType");
  uint32_t flags = ArgU32Or(info, 3, op, "flags", 0);
  op.subject = "prog=" + std::to_string(prog_fd) + ",target=" + std::to_string(target_fd) +
               ",attach=" + std::to_string(attach_type);
  bpf_link_create_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.flags = flags;
  int fd = bpf_link_create(prog_fd, target_fd, static_cast<enum bpf_attach_type>(attach_type), &opts);
  if (fd < 0) op.Fail(NegErr(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "link_update");
  int link_fd = ArgFd(info, 0, op, "linkFd");
  int prog_fd = ArgFd(info, 1, op, "newProgFd");
  op.subject = "fd=" + std::to_string(link_fd) + ",prog=" + std::to_string(prog_fd);
  bpf_link_update_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  // With an expected old program the swap is a compare-and-exchange, which
  // lets concurrent updaters detect that someone else replaced it first.
  if (ArgPresent(info, 2)) {
    opts.old_prog_fd = static_cast<uint32_t>(ArgFd(info, 2, op, "oldProgFd"));
    opts.flags = BPF_F_REPLACE;
  }
  int ret = bpf_link_update(link_fd, prog_fd, &opts);
  if (ret < 0) op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "link_info");
  int fd = ArgFd(info, 0, op, "linkFd");
  op.subject = "fd=" + std::to_string(fd);
  CheckFdKind(fd, FdKind::kLink, op);
  bpf_link_info li;
  memset(&li, 0, sizeof(li));
  uint32_t len = sizeof(li);
  int ret = bpf_obj_get_info_by_fd(fd, &li, &len);
  if (ret < 0) op.Fail(NegErr(ret));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(li.id));
  o.Set("progId", static_cast<double>(li.prog_id));
  o.Set("type", static_cast<double>(li.type));
  switch (li.type) {
    case BPF_LINK_TYPE_CGROUP:
      // cgroup ids are kernfs inode numbers, far below 2^53 in practice.
      o.Set("cgroupId", static_cast<double>(li.cgroup.cgroup_id));
      o.Set("attachType", static_cast<double>(li.cgroup.attach_type));
      break;
    case BPF_LINK_TYPE_NETNS:
      o.Set("netnsIno", static_cast<double>(li.netns.netns_ino));
      o.Set("attachType", static_cast<double>(li.netns.attach_type));
      break;
    case BPF_LINK_TYPE_TRACING:
      o.Set("attachType", static_cast<double>(li.tracing.attach_type));
      break;
    case BPF_LINK_TYPE_XDP:
      o.Set("ifindex", static_cast<double>(li.xdp.ifindex));
      break;
    default:
      break;
  }
  return o;
}

Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "link_detach");
  int fd = ArgFd(info, 0, op, "linkFd");
  op.subject = "fd=" + std::to_string(fd);
  int ret = bpf_link_detach(fd);
  if (ret < 0) op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value ProgAttach(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "prog_attach");
  int prog_fd = ArgFd(info, 0, op, "progFd");
  int target_fd = ArgFd(info, 1, op, "targetFd");
  uint32_t attach_type = ArgU32(info, 2, op, "attachType");
  uint32_t flags = ArgU32Or(info, 3, op, "flags", 0);
  op.subject = "prog=" + std::to_string(prog_fd) + ",target=" + std::to_string(target_fd) +
               ",attach=" + std::to_string(attach_type);
  int ret = bpf_prog_attach(prog_fd, target_fd, static_cast<enum bpf_attach_type>(attach_type), flags);
  if (ret < 0) op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value ProgDetach(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "prog_detach");
  int prog_fd = ArgFd(info, 0, op, "progFd");
  int target_fd = ArgFd(info, 1, op, "targetFd");
  uint32_t attach_type = ArgU32(info, 2, op, "attachType");
  op.subject = "prog=" + std::to_string(prog_fd) + ",target=" + std::to_string(target_fd) +
               ",attach=" + std::to_string(attach_type);
  int ret = bpf_prog_detach2(prog_fd, target_fd, static_cast<enum bpf_attach_type>(attach_type));
  if (ret < 0) op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value ProgQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "prog_query");
  int target_fd = ArgFd(info, 0, op, "targetFd");
  uint32_t attach_type = ArgU32(info, 1, op, "attachType");
  uint32_t query_flags = ArgU32Or(info, 2, op, "queryFlags", 0);
  op.subject = "target=" + std::to_string(target_fd) + ",attach=" + std::to_string(attach_type);

  std::vector<uint32_t> ids(64);
  uint32_t attach_flags = 0;
  uint32_t cnt = 0;
  // The attached set can grow between calls; on ENOSPC the kernel reports the
  // current total, so retry with that much room.
  for (int attempt = 0;; attempt++) {
    cnt = static_cast<uint32_t>(ids.size());
    int ret = bpf_prog_query(target_fd, static_cast<enum bpf_attach_type>(attach_type), query_flags,
                             &attach_flags, ids.data(), &cnt);
    if (ret == 0) break;
    int err = NegErr(ret);
    if (err == ENOSPC && attempt < 8) {
      ids.resize(std::max<size_t>(cnt, ids.size() * 2) + 16);
      continue;
    }
    op.Fail(err);
  }
  if (cnt > ids.size()) cnt = static_cast<uint32_t>(ids.size());
  Napi::Array arr = Napi::Array::New(env, cnt);
  for (uint32_t i = 0; i < cnt; i++) arr.Set(i, static_cast<double>(ids[i]));
  Napi::Object o = Napi::Object::New(env);
  o.Set("progIds", arr);
  o.Set("attachFlags", static_cast<double>(attach_flags));
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "prog_info");
  int fd = ArgFd(info, 0, op, "progFd");
  op.subject = "fd=" + std::to_string(fd);
  CheckFdKind(fd, FdKind::kProg, op);

  bpf_prog_info pi;
  std::vector<uint32_t> map_ids;
  // First pass learns nr_map_ids, second fetches them; map ids of a loaded
  // program never change, so two passes suffice.
  for (int pass = 0; pass < 2; pass++) {
    memset(&pi, 0, sizeof(pi));
    uint32_t len = sizeof(pi);
    if (!map_ids.empty()) {
      pi.nr_map_ids = static_cast<uint32_t>(map_ids.size());
      pi.map_ids = reinterpret_cast<uint64_t>(map_ids.data());
    }
    int ret = bpf_obj_get_info_by_fd(fd, &pi, &len);
    if (ret < 0) op.Fail(NegErr(ret));
    if (pass == 0) {
      if (pi.nr_map_ids == 0) break;
      map_ids.resize(pi.nr_map_ids);
    }
  }
  uint32_t n_ids = std::min<uint32_t>(pi.nr_map_ids, static_cast<uint32_t>(map_ids.size()));

  static const char hex[] = "0123456789abcdef";
  std::string tag;
  for (size_t i = 0; i < sizeof(pi.tag); i++) {
    tag += hex[pi.tag[i] >> 4];
    tag += hex[pi.tag[i] & 0xf];
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(pi.id));
  o.Set("name", std::string(pi.name, strnlen(pi.name, sizeof(pi.name))));
  o.Set("tag", tag);
  o.Set("type", static_cast<double>(pi.type));
  // Counters only advance while kernel.bpf_stats_enabled=1.
  o.Set("runCnt", static_cast<double>(pi.run_cnt));
  o.Set("runTimeNs", static_cast<double>(pi.run_time_ns));
  Napi::Array ids = Napi::Array::New(env, n_ids);
  for (uint32_t i = 0; i < n_ids; i++) ids.Set(i, static_cast<double>(map_ids[i]));
  o.Set("mapIds", ids);
  o.Set("loadTimeNs", static_cast<double>(pi.load_time));
  o.Set("btfId", static_cast<double>(pi.btf_id));
  o.Set("xlatedProgLen", static_cast<double>(pi.xlated_prog_len));
  o.Set("jitedProgLen", static_cast<double>(pi.jited_prog_len));
  o.Set("verifiedInsns", static_cast<double>(pi.verified_insns));
  return o;
}

template <int (*Fn)(uint32_t)>
Napi::Value GetFdById(const Napi::CallbackInfo& info, const char* name) {
  Op op(info.Env(), name);
  uint32_t id = ArgU32(info, 0, op, "id");
  op.subject = "id=" + std::to_string(id);
  int fd = Fn(id);
  if (fd < 0) op.Fail(NegErr(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value ProgGetFdById(const Napi::CallbackInfo& info) {
  return GetFdById<bpf_prog_get_fd_by_id>(info, "prog_get_fd_by_id");
}
Napi::Value MapGetFdById(const Napi::CallbackInfo& info) {
  return GetFdById<bpf_map_get_fd_by_id>(info, "map_get_fd_by_id");
}
Napi::Value LinkGetFdById(const Napi::CallbackInfo& info) {
  return GetFdById<bpf_link_get_fd_by_id>(info, "link_get_fd_by_id");
}

}  // namespace

void InitProgs(Napi::Env env, Napi::Object exports) {
  exports.Set("linkCreate", Napi::Function::New(env, LinkCreate, "linkCreate"));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate, "linkUpdate"));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo, "linkInfo"));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach, "linkDetach"));
  exports.Set("progAttach", Napi::Function::New(env, ProgAttach, "progAttach"));
  exports.Set("progDetach", Napi::Function::New(env, ProgDetach, "progDetach"));
  exports.Set("progQuery", Napi::Function::New(env, ProgQuery, "progQuery"));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo, "progInfo"));
  exports.Set("progGetFdById", Napi::Function::New(env, ProgGetFdById, "progGetFdById"));
  exports.Set("mapGetFdById", Napi::Function::New(env, MapGetFdById, "mapGetFdById"));
  exports.Set("linkGetFdById", Napi::Function::New(env, LinkGetFdById, "linkGetFdById"));
}

}  // namespace smbpf
