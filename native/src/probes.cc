// Kernel feature probes: does the running kernel have a program type, a map type, a helper in a
// program type, a link type, BPF_F_LOCK? Each probe loads or creates the smallest object that
// answers the question and closes it at once; nothing is attached anywhere. libbpf's own probes
// are used where they exist (libbpf_probe_bpf_*); the others follow their method: ask the
// kernel, never guess from the version number (distributions backport features).
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace smbpf {

namespace {

// libbpf answers 1 (supported), 0 (not), or <0 when the probe itself could not run. libbpf 1.1
// also answers 0 when the kernel refused the load for lack of privilege, so callers first check
// ProbeCanLoad, which tells "not permitted" apart from "not supported".
Napi::Value Answer(const Op& op, int r) {
  if (r < 0) op.Fail(NegErr(r));
  return Napi::Boolean::New(op.env, r == 1);
}

// Whether this process may load BPF programs at all: a socket filter `r0 = 0; exit`, the most
// basic load there is. Throws the kernel's errno (EPERM: no CAP_BPF/CAP_SYS_ADMIN, a seccomp
// filter, kernel.unprivileged_bpf_disabled) so that a missing privilege is never reported as a
// missing kernel feature.
Napi::Value ProbeCanLoad(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_can_load");
  struct bpf_insn insns[2];
  memset(insns, 0, sizeof(insns));
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[1].code = BPF_JMP | BPF_EXIT;
  int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "sm_probe", "GPL", insns, 2, nullptr);
  if (fd < 0) op.Fail(NegErr(fd));
  close(fd);
  return Napi::Boolean::New(op.env, true);
}

Napi::Value ProbeProgType(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_prog_type");
  uint32_t t = ArgU32(info, 0, op, "progType");
  op.subject = "type=" + std::to_string(t);
  return Answer(op, libbpf_probe_bpf_prog_type(static_cast<enum bpf_prog_type>(t), nullptr));
}

Napi::Value ProbeMapType(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_map_type");
  uint32_t t = ArgU32(info, 0, op, "mapType");
  op.subject = "type=" + std::to_string(t);
  return Answer(op, libbpf_probe_bpf_map_type(static_cast<enum bpf_map_type>(t), nullptr));
}

// `r0 = imm; exit`: the smallest program of any type.
void ReturnImm(struct bpf_insn insns[2], int32_t imm) {
  memset(insns, 0, 2 * sizeof(struct bpf_insn));
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = imm;
  insns[1].code = BPF_JMP | BPF_EXIT;
}

// Whether programs of progType may call helper `id`. libbpf 1.1's libbpf_probe_bpf_helper only
// knows the verifier's older wording and answers "supported" for everything on kernels >= 6.x
// (whose verifier says "program of this type cannot use helper"), so the answer is read here from
// the verifier log of a program that calls the helper. A load that fails for any other reason
// (the helper disliked its arguments) means the verifier knew the helper for this type.
Napi::Value ProbeHelper(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_helper");
  uint32_t t = ArgU32(info, 0, op, "progType");
  uint32_t id = ArgU32(info, 1, op, "helperId");
  uint32_t attach = ArgU32Or(info, 2, op, "expectedAttachType", 0);
  op.subject = "type=" + std::to_string(t) + ",helper=" + std::to_string(id);
  struct bpf_insn insns[3];
  memset(insns, 0, sizeof(insns));
  insns[0].code = BPF_JMP | BPF_CALL;
  insns[0].imm = static_cast<int32_t>(id);
  ReturnImm(&insns[1], 1);
  static char log[16384];
  log[0] = '\0';
  LIBBPF_OPTS(bpf_prog_load_opts, popts, .expected_attach_type = static_cast<enum bpf_attach_type>(attach),
              .log_level = 1, .log_size = sizeof(log), .log_buf = log);
  int fd = bpf_prog_load(static_cast<enum bpf_prog_type>(t), "sm_probe", "GPL", insns, 3, &popts);
  if (fd >= 0) {
    close(fd);
    return Napi::Boolean::New(op.env, true);
  }
  int err = NegErr(fd);
  if (err == EPERM) op.Fail(err);
  bool refused = strstr(log, "invalid func ") || strstr(log, "unknown func ") || strstr(log, "cannot use helper ");
  if (!refused && log[0] == '\0') op.Fail(err, "the verifier gave no log");
  return Napi::Boolean::New(op.env, !refused);
}

// Can a program of progType be attached through a bpf_link (BPF_LINK_CREATE) to a map of mapType
// with attachType? E.g. sk_msg on a sockhash, which kernels before 6.10 only allow the legacy way.
Napi::Value ProbeMapLink(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_map_link");
  uint32_t prog_type = ArgU32(info, 0, op, "progType");
  uint32_t attach_type = ArgU32(info, 1, op, "attachType");
  uint32_t map_type = ArgU32(info, 2, op, "mapType");
  op.subject = "prog=" + std::to_string(prog_type) + ",attach=" + std::to_string(attach_type) +
               ",map=" + std::to_string(map_type);
  // Socket maps take a u32 key and a u64 (socket cookie / fd) value.
  UniqueFd map(bpf_map_create(static_cast<enum bpf_map_type>(map_type), "sm_probe", 4, 8, 1, nullptr));
  if (map.get() < 0) op.Fail(NegErr(map.get()), "creating the probe map");
  struct bpf_insn insns[2];
  ReturnImm(insns, 1);
  LIBBPF_OPTS(bpf_prog_load_opts, popts, .expected_attach_type = static_cast<enum bpf_attach_type>(attach_type));
  UniqueFd prog(bpf_prog_load(static_cast<enum bpf_prog_type>(prog_type), "sm_probe", "GPL", insns, 2, &popts));
  if (prog.get() < 0) op.Fail(NegErr(prog.get()), "loading the probe program");
  int link = bpf_link_create(prog.get(), map.get(), static_cast<enum bpf_attach_type>(attach_type), nullptr);
  if (link >= 0) {
    close(link);
    return Napi::Boolean::New(op.env, true);
  }
  int err = NegErr(link);
  // What a kernel without this link type answers; anything else is a failed probe.
  if (err == EINVAL || err == EOPNOTSUPP || err == kENOTSUPP) return Napi::Boolean::New(op.env, false);
  op.Fail(err);
}

// BPF_F_LOCK lookups on a hash map whose value holds a bpf_spin_lock (described by BTF, as the
// kernel requires). A kernel that knows the flag answers ENOENT for the absent key.
Napi::Value ProbeLockedLookup(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "probe_locked_lookup");
  struct btf* btf = btf__new_empty();
  if (!btf) op.Fail(errno ? errno : ENOMEM, "btf__new_empty");
  int u32_id = btf__add_int(btf, "unsigned int", 4, 0);
  int lock_id = btf__add_struct(btf, "bpf_spin_lock", 4);
  int ok = lock_id > 0 ? btf__add_field(btf, "val", u32_id, 0, 0) : lock_id;
  int val_id = ok == 0 ? btf__add_struct(btf, "sm_probe_val", 8) : ok;
  if (val_id > 0) ok = btf__add_field(btf, "lock", lock_id, 0, 0);
  if (val_id > 0 && ok == 0) ok = btf__add_field(btf, "x", u32_id, 32, 0);
  if (u32_id < 0 || lock_id < 0 || val_id < 0 || ok < 0) {
    btf__free(btf);
    op.Fail(EINVAL, "building the probe BTF");
  }
  int btf_fd = btf__load_into_kernel(btf);
  int btf_err = btf_fd < 0 ? NegErr(btf_fd) : 0;
  btf_fd = btf__fd(btf);
  if (btf_err) {
    btf__free(btf);
    // No kernel BTF loading: no spin locks in maps either.
    if (btf_err == EINVAL || btf_err == EOPNOTSUPP) return Napi::Boolean::New(op.env, false);
    op.Fail(btf_err, "loading the probe BTF");
  }
  LIBBPF_OPTS(bpf_map_create_opts, mopts, .btf_fd = static_cast<uint32_t>(btf_fd), .btf_key_type_id = static_cast<uint32_t>(u32_id),
              .btf_value_type_id = static_cast<uint32_t>(val_id));
  int map = bpf_map_create(BPF_MAP_TYPE_HASH, "sm_probe", 4, 8, 1, &mopts);
  btf__free(btf);  // the map holds its own reference to the kernel's copy
  if (map < 0) {
    int err = NegErr(map);
    if (err == EINVAL || err == EOPNOTSUPP) return Napi::Boolean::New(op.env, false);
    op.Fail(err, "creating the probe map");
  }
  uint32_t key = 0;
  uint8_t value[8];
  int err = NegErr(bpf_map_lookup_elem_flags(map, &key, value, BPF_F_LOCK));
  close(map);
  if (err == 0 || err == ENOENT) return Napi::Boolean::New(op.env, true);
  if (err == EINVAL) return Napi::Boolean::New(op.env, false);
  op.Fail(err);
}

}  // namespace

void InitProbes(Napi::Env env, Napi::Object exports) {
  exports.Set("probeCanLoad", Napi::Function::New(env, ProbeCanLoad, "probeCanLoad"));
  exports.Set("probeProgType", Napi::Function::New(env, ProbeProgType, "probeProgType"));
  exports.Set("probeMapType", Napi::Function::New(env, ProbeMapType, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New(env, ProbeHelper, "probeHelper"));
  exports.Set("probeMapLink", Napi::Function::New(env, ProbeMapLink, "probeMapLink"));
  exports.Set("probeLockedLookup", Napi::Function::New(env, ProbeLockedLookup, "probeLockedLookup"));
}

}  // namespace smbpf
