// Map syscalls. Every call that passes user memory to the kernel first learns
// the map's real key/value sizes (BPF_OBJ_GET_INFO_BY_FD) and insists the JS
// buffers match exactly: the kernel copies key_size/value_size bytes blindly,
// so a short Buffer would otherwise be read or written past its end.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common.h"
#include "fdkind.h"

namespace smbpf {

void CheckFdKind(int fd, FdKind kind, const Op& op) {
  // BPF_OBJ_GET_INFO_BY_FD reports a closed fd as EBADFD; say EBADF like
  // every other fd-taking call does.
  if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) op.Fail(EBADF);
  char path[64];
  char target[128];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) return;
  target[n] = '\0';
  const char* want = kind == FdKind::kMap ? "anon_inode:bpf-map"
                     : kind == FdKind::kProg ? "anon_inode:bpf-prog"
                                            : "anon_inode:bpf_link";
  // Kernels name link inodes "bpf_link" (older) or "bpf-link" (newer): accept either.
  bool ok = strcmp(target, want) == 0 ||
            (kind == FdKind::kLink && strcmp(target, "anon_inode:bpf-link") == 0);
  if (!ok) {
    op.Invalid("fd " + std::to_string(fd) + " is " + target + ", expected " + (want + 11));
  }
}

bpf_map_info GetMapInfo(int fd, const Op& op) {
  CheckFdKind(fd, FdKind::kMap, op);
  bpf_map_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int ret = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (ret < 0) op.Fail(NegErr(ret), "bpf_obj_get_info_by_fd");
  return info;
}

size_t SyscallValueSize(const bpf_map_info& info, const Op& op) {
  switch (info.type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: {
      int ncpu = libbpf_num_possible_cpus();
      if (ncpu <= 0) op.Fail(ncpu < 0 ? -ncpu : EIO, "libbpf_num_possible_cpus");
      return ((static_cast<size_t>(info.value_size) + 7) / 8 * 8) * static_cast<size_t>(ncpu);
    }
    default:
      return info.value_size;
  }
}

namespace {

constexpr uint32_t kDefaultBatch = 256;

bool BatchUnsupported(int err) { return err == EINVAL || err == kENOTSUPP || err == EOPNOTSUPP; }

struct MapCtx {
  Op op;
  int fd = -1;
  bpf_map_info info{};
  size_t value_size = 0;  // syscall value size
};

MapCtx Begin(const Napi::CallbackInfo& info, const char* name) {
  MapCtx c{Op(info.Env(), name)};
  c.fd = ArgFd(info, 0, c.op, "fd");
  c.op.subject = "fd=" + std::to_string(c.fd);
  c.info = GetMapInfo(c.fd, c.op);
  c.value_size = SyscallValueSize(c.info, c.op);
  return c;
}

// Returns the pointer to hand the kernel for a key; maps without keys (queue,
// stack, bloom filter) require NULL there.
const void* CheckKey(const MapCtx& c, const Bytes& key, const char* what) {
  if (c.info.key_size == 0) {
    if (key.present && key.len != 0) c.op.Invalid(std::string(what) + " must be empty: map has no keys");
    return nullptr;
  }
  if (!key.present) c.op.Invalid(std::string(what) + " is required");
  if (key.len != c.info.key_size) {
    c.op.Invalid(std::string(what) + " is " + std::to_string(key.len) + " bytes, map key_size is " +
                 std::to_string(c.info.key_size));
  }
  return key.data;
}

void CheckValueLen(const MapCtx& c, size_t len, const char* what) {
  if (len != c.value_size) {
    std::string hint;
    if (c.value_size != c.info.value_size) {
      hint = " (per-CPU map: roundup8(" + std::to_string(c.info.value_size) +
             ") * numPossibleCpus())";
    }
    c.op.Invalid(std::string(what) + " is " + std::to_string(len) + " bytes, map expects " +
                 std::to_string(c.value_size) + hint);
  }
}

Napi::Object MapInfoObject(Napi::Env env, const bpf_map_info& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(info.id));
  o.Set("name", std::string(info.name, strnlen(info.name, sizeof(info.name))));
  o.Set("type", static_cast<double>(info.type));
  o.Set("keySize", static_cast<double>(info.key_size));
  o.Set("valueSize", static_cast<double>(info.value_size));
  o.Set("maxEntries", static_cast<double>(info.max_entries));
  o.Set("flags", static_cast<double>(info.map_flags));
  o.Set("btfId", static_cast<double>(info.btf_id));
  return o;
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  MapCtx c = Begin(info, "map_info");
  return MapInfoObject(info.Env(), c.info);
}

Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "map_create");
  uint32_t type = ArgU32(info, 0, op, "type");
  uint32_t key_size = ArgU32(info, 1, op, "keySize");
  uint32_t value_size = ArgU32(info, 2, op, "valueSize");
  uint32_t max_entries = ArgU32(info, 3, op, "maxEntries");
  std::string name;
  if (ArgPresent(info, 4)) name = ArgString(info, 4, op, "name");
  uint32_t flags = ArgU32Or(info, 5, op, "flags", 0);
  op.subject = "type=" + std::to_string(type) + (name.empty() ? "" : ",name=" + name);

  bpf_map_create_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.map_flags = flags;
  if (ArgPresent(info, 6)) opts.inner_map_fd = static_cast<uint32_t>(ArgFd(info, 6, op, "innerMapFd"));
  int fd = bpf_map_create(static_cast<enum bpf_map_type>(type), name.empty() ? nullptr : name.c_str(),
                          key_size, value_size, max_entries, &opts);
  if (fd < 0) op.Fail(NegErr(fd));
  return Napi::Number::New(env, fd);
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapCtx c = Begin(info, "map_lookup");
  Bytes key = ArgBytes(info, 1, c.op, "key", true);
  const void* kp = CheckKey(c, key, "key");
  uint32_t want = ArgU32(info, 2, c.op, "valueSize");
  CheckValueLen(c, want, "valueSize");
  uint64_t flags = ArgU64Or(info, 3, c.op, "flags", 0);
  std::vector<uint8_t> value(std::max<size_t>(c.value_size, 1));
  int ret = bpf_map_lookup_elem_flags(c.fd, kp, value.data(), flags);
  if (ret < 0) {
    if (NegErr(ret) == ENOENT) return env.Null();
    c.op.Fail(NegErr(ret));
  }
  return CopyBuffer(env, value.data(), c.value_size);
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  MapCtx c = Begin(info, "map_update");
  Bytes key = ArgBytes(info, 1, c.op, "key", true);
  const void* kp = CheckKey(c, key, "key");
  Bytes value = ArgBytes(info, 2, c.op, "value", false);
  CheckValueLen(c, value.len, "value");
  uint64_t flags = ArgU64Or(info, 3, c.op, "flags", BPF_ANY);
  int ret = bpf_map_update_elem(c.fd, kp, value.data, flags);
  if (ret < 0) c.op.Fail(NegErr(ret));
  return info.Env().Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  MapCtx c = Begin(info, "map_delete");
  Bytes key = ArgBytes(info, 1, c.op, "key", true);
  const void* kp = CheckKey(c, key, "key");
  int ret = bpf_map_delete_elem(c.fd, kp);
  if (ret < 0) {
    if (NegErr(ret) == ENOENT) return Napi::Boolean::New(info.Env(), false);
    c.op.Fail(NegErr(ret));
  }
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value MapGetNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapCtx c = Begin(info, "map_get_next_key");
  Bytes key = ArgBytes(info, 1, c.op, "key", true);
  uint32_t key_size = ArgU32(info, 2, c.op, "keySize");
  if (key_size != c.info.key_size || key_size == 0) {
    c.op.Invalid("keySize " + std::to_string(key_size) + " does not match map key_size " +
                 std::to_string(c.info.key_size));
  }
  const void* kp = key.present ? CheckKey(c, key, "key") : nullptr;
  std::vector<uint8_t> next(key_size);
  int ret = bpf_map_get_next_key(c.fd, kp, next.data());
  if (ret < 0) {
    if (NegErr(ret) == ENOENT) return env.Null();
    c.op.Fail(NegErr(ret));
  }
  return CopyBuffer(env, next.data(), key_size);
}

// Element-at-a-time walk for maps without batch support (sockhash, LPM trie,
// older kernels). Entries deleted between get_next_key and lookup are skipped.
void WalkFallback(const MapCtx& c, std::vector<uint8_t>& keys, std::vector<uint8_t>& values,
                  size_t& count) {
  const size_t ks = c.info.key_size;
  const size_t vs = c.value_size;
  std::vector<uint8_t> prev(ks), next(ks), value(std::max<size_t>(vs, 1));
  bool have_prev = false;
  // A hash map restarts from its first key when `prev` vanishes under
  // concurrent deletes; bound the walk so churn cannot make it endless.
  const uint64_t limit = 4ull * std::max<uint32_t>(c.info.max_entries, 1) + 1024;
  for (uint64_t steps = 0;; steps++) {
    if (steps > limit) c.op.Fail(EAGAIN, "map changed too much during iteration");
    int ret = bpf_map_get_next_key(c.fd, have_prev ? prev.data() : nullptr, next.data());
    if (ret < 0) {
      if (NegErr(ret) == ENOENT) return;
      c.op.Fail(NegErr(ret), "bpf_map_get_next_key");
    }
    ret = bpf_map_lookup_elem(c.fd, next.data(), value.data());
    if (ret == 0) {
      keys.insert(keys.end(), next.begin(), next.end());
      values.insert(values.end(), value.begin(), value.begin() + vs);
      count++;
    } else if (NegErr(ret) != ENOENT) {
      c.op.Fail(NegErr(ret), "bpf_map_lookup_elem");
    }
    prev.swap(next);
    have_prev = true;
  }
}

Napi::Value MapLookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapCtx c = Begin(info, "map_lookup_batch");
  uint32_t key_size = ArgU32(info, 1, c.op, "keySize");
  uint32_t value_size = ArgU32(info, 2, c.op, "valueSize");
  uint32_t chunk = ArgU32Or(info, 3, c.op, "maxCount", kDefaultBatch);
  if (key_size != c.info.key_size || key_size == 0) {
    c.op.Invalid("keySize " + std::to_string(key_size) + " does not match map key_size " +
                 std::to_string(c.info.key_size));
  }
  CheckValueLen(c, value_size, "valueSize");
  if (chunk == 0) c.op.Invalid("maxCount must be >= 1");
  const size_t ks = key_size;
  const size_t vs = value_size;

  std::vector<uint8_t> keys, values;
  size_t count = 0;
  // The resume token is opaque: a bucket index for hash maps, a key for the
  // generic (array) implementation, so size it for either.
  const size_t tok_size = std::max<size_t>(ks, 8);
  std::vector<uint8_t> in_tok(tok_size), out_tok(tok_size);
  bool first = true;
  bpf_map_batch_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  for (;;) {
    size_t base = count;
    keys.resize((base + chunk) * ks);
    values.resize((base + chunk) * std::max<size_t>(vs, 1));
    uint32_t n = chunk;
    int ret = bpf_map_lookup_batch(c.fd, first ? nullptr : in_tok.data(), out_tok.data(),
                                   keys.data() + base * ks, values.data() + base * vs, &n, &opts);
    int err = NegErr(ret);
    if (err != 0 && err != ENOENT) {
      if (err == ENOSPC && n == 0 && chunk < (1u << 20)) {
        chunk *= 2;  // one hash bucket holds more entries than a chunk
        continue;
      }
      if (first && BatchUnsupported(err)) {
        keys.resize(0);
        values.resize(0);
        count = 0;
        WalkFallback(c, keys, values, count);
        break;
      }
      c.op.Fail(err, "after " + std::to_string(count) + " entries");
    }
    if (n > chunk) n = 0;  // count not written back: nothing was returned
    count += n;
    if (err == ENOENT) break;
    in_tok.swap(out_tok);
    first = false;
  }

  Napi::Array jkeys = Napi::Array::New(env, count);
  Napi::Array jvalues = Napi::Array::New(env, count);
  for (size_t i = 0; i < count; i++) {
    jkeys.Set(static_cast<uint32_t>(i), CopyBuffer(env, keys.data() + i * ks, ks));
    jvalues.Set(static_cast<uint32_t>(i), CopyBuffer(env, values.data() + i * vs, vs));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", jkeys);
  out.Set("values", jvalues);
  return out;
}

// Packs a JS array of equally sized buffers into one contiguous vector.
std::vector<uint8_t> PackArray(const MapCtx& c, const Napi::Value& v, const char* what,
                               size_t elem_size, size_t& n_out) {
  if (!v.IsArray()) c.op.Invalid(std::string(what) + " must be an array of Buffers");
  Napi::Array arr = v.As<Napi::Array>();
  size_t n = arr.Length();
  std::vector<uint8_t> out(n * elem_size);
  for (uint32_t i = 0; i < n; i++) {
    std::string label = std::string(what) + "[" + std::to_string(i) + "]";
    Bytes b = ValueBytes(arr.Get(i), c.op, label.c_str(), false);
    if (b.len != elem_size) {
      c.op.Invalid(label + " is " + std::to_string(b.len) + " bytes, expected " +
                   std::to_string(elem_size));
    }
    if (elem_size) memcpy(out.data() + i * elem_size, b.data, elem_size);
  }
  n_out = n;
  return out;
}

// The generic batch code leaves `count` untouched when it fails before its
// loop; a count equal to the request can only mean that, since a failure
// inside the loop always stops short of it.
uint32_t Processed(uint32_t count_after, uint32_t requested) {
  return count_after >= requested ? 0 : count_after;
}

Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  MapCtx c = Begin(info, "map_update_batch");
  if (c.info.key_size == 0) c.op.Invalid("map has no keys");
  size_t nk = 0, nv = 0;
  std::vector<uint8_t> keys =
      PackArray(c, info.Length() > 1 ? info[1] : info.Env().Undefined(), "keys", c.info.key_size, nk);
  std::vector<uint8_t> values = PackArray(c, info.Length() > 2 ? info[2] : info.Env().Undefined(),
                                          "values", c.value_size, nv);
  if (nk != nv) c.op.Invalid("keys and values differ in length");
  uint64_t flags = ArgU64Or(info, 3, c.op, "flags", BPF_ANY);
  const size_t ks = c.info.key_size, vs = c.value_size;

  bpf_map_batch_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.elem_flags = flags;
  size_t done = 0;
  while (done < nk) {
    uint32_t req = static_cast<uint32_t>(std::min<size_t>(nk - done, 1u << 20));
    uint32_t n = req;
    int ret = bpf_map_update_batch(c.fd, keys.data() + done * ks, values.data() + done * vs, &n, &opts);
    int err = NegErr(ret);
    if (err == 0) {
      done += req;
      continue;
    }
    done += Processed(n, req);
    if (BatchUnsupported(err) && Processed(n, req) == 0) break;  // per-element below
    c.op.Fail(err, "after " + std::to_string(done) + " of " + std::to_string(nk) + " elements");
  }
  for (; done < nk; done++) {
    int ret = bpf_map_update_elem(c.fd, keys.data() + done * ks, values.data() + done * vs, flags);
    if (ret < 0) {
      c.op.Fail(NegErr(ret), "after " + std::to_string(done) + " of " + std::to_string(nk) + " elements");
    }
  }
  return info.Env().Undefined();
}

Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  MapCtx c = Begin(info, "map_delete_batch");
  if (c.info.key_size == 0) c.op.Invalid("map has no keys");
  size_t nk = 0;
  std::vector<uint8_t> keys =
      PackArray(c, info.Length() > 1 ? info[1] : info.Env().Undefined(), "keys", c.info.key_size, nk);
  const size_t ks = c.info.key_size;

  bpf_map_batch_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  size_t pos = 0, deleted = 0;
  bool fallback = false;
  while (pos < nk) {
    uint32_t req = static_cast<uint32_t>(std::min<size_t>(nk - pos, 1u << 20));
    uint32_t n = req;
    int ret = bpf_map_delete_batch(c.fd, keys.data() + pos * ks, &n, &opts);
    int err = NegErr(ret);
    if (err == 0) {
      pos += req;
      deleted += req;
      continue;
    }
    uint32_t ok = Processed(n, req);
    pos += ok;
    deleted += ok;
    // The batch stops at the first missing key; absent keys are not an error
    // for this API, so step over it and carry on.
    if (err == ENOENT) {
      pos++;
      continue;
    }
    if (BatchUnsupported(err) && ok == 0) {
      fallback = true;
      break;
    }
    c.op.Fail(err, "after " + std::to_string(pos) + " of " + std::to_string(nk) + " keys");
  }
  if (fallback) {
    for (; pos < nk; pos++) {
      int ret = bpf_map_delete_elem(c.fd, keys.data() + pos * ks);
      if (ret == 0) {
        deleted++;
      } else if (NegErr(ret) != ENOENT) {
        c.op.Fail(NegErr(ret), "after " + std::to_string(pos) + " of " + std::to_string(nk) + " keys");
      }
    }
  }
  return Napi::Number::New(info.Env(), static_cast<double>(deleted));
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  Op op(info.Env(), "num_possible_cpus");
  int n = libbpf_num_possible_cpus();
  if (n <= 0) op.Fail(n < 0 ? -n : EIO);
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

void InitMaps(Napi::Env env, Napi::Object exports) {
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo, "mapInfo"));
  exports.Set("mapCreate", Napi::Function::New(env, MapCreate, "mapCreate"));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup, "mapLookup"));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate, "mapUpdate"));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete, "mapDelete"));
  exports.Set("mapGetNextKey", Napi::Function::New(env, MapGetNextKey, "mapGetNextKey"));
  exports.Set("mapLookupBatch", Napi::Function::New(env, MapLookupBatch, "mapLookupBatch"));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch, "mapUpdateBatch"));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch, "mapDeleteBatch"));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus, "numPossibleCpus"));
}

}  // namespace smbpf
