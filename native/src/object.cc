// bpf_object lifecycle: open (with pin root / max_entries overrides), load,
// introspection and close. Program and map fds handed out belong to the
// object: close() invalidates them, so callers dup() what they keep.
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common.h"
#include "log_capture.h"

namespace smbpf {

namespace {

constexpr size_t kLogTail = 16 * 1024;

struct ObjectCloser {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};
using ObjectPtr = std::unique_ptr<bpf_object, ObjectCloser>;

class NativeBpfObject : public Napi::ObjectWrap<NativeBpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeBpfObject",
                       {
                           InstanceMethod("load", &NativeBpfObject::Load),
                           InstanceMethod("programs", &NativeBpfObject::Programs),
                           InstanceMethod("maps", &NativeBpfObject::Maps),
                           InstanceMethod("close", &NativeBpfObject::Close),
                           InstanceMethod("log", &NativeBpfObject::Log),
                           InstanceMethod("isLoaded", &NativeBpfObject::IsLoaded),
                       });
  }

  // Construction does nothing so that a failing open never runs inside the
  // ObjectWrap constructor; the static open() fills the instance afterwards.
  explicit NativeBpfObject(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeBpfObject>(info) {}

  static Napi::Value Open(const Napi::CallbackInfo& info);

 private:
  void DoOpen(const Napi::CallbackInfo& info);
  bpf_object* Live(const Op& op) const {
    if (!obj_) op.Fail(EBADF, "object is closed");
    return obj_.get();
  }

  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Log(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), log_); }
  Napi::Value IsLoaded(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), loaded_);
  }

  ObjectPtr obj_;
  std::string path_;
  std::string log_;
  bool debug_log_ = false;
  bool load_attempted_ = false;
  bool loaded_ = false;
};

Napi::Value NativeBpfObject::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object self = env.GetInstanceData<AddonData>()->objectCtor.New({});
  NativeBpfObject::Unwrap(self)->DoOpen(info);
  return self;
}

void NativeBpfObject::DoOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "object_open");
  path_ = ArgString(info, 0, op, "path");
  op.subject = "path=" + path_;

  std::string pin_root;
  uint32_t log_level = 0;
  Napi::Object max_entries;
  bool have_max_entries = false;
  if (ArgPresent(info, 1)) {
    if (!info[1].IsObject()) op.Invalid("options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value pr = o.Get("pinRoot");
    if (!pr.IsUndefined() && !pr.IsNull()) {
      if (!pr.IsString()) op.Invalid("pinRoot must be a string");
      pin_root = pr.As<Napi::String>().Utf8Value();
      if (pin_root.empty() || pin_root.find('\0') != std::string::npos) {
        op.Invalid("pinRoot must be a non-empty path");
      }
    }
    Napi::Value ll = o.Get("kernelLogLevel");
    if (!ll.IsUndefined() && !ll.IsNull()) {
      if (!ll.IsNumber()) op.Invalid("kernelLogLevel must be a number");
      int64_t v = ll.As<Napi::Number>().Int64Value();
      if (v < 0 || v > 7) op.Invalid("kernelLogLevel must be 0..7");
      log_level = static_cast<uint32_t>(v);
    }
    Napi::Value me = o.Get("maxEntries");
    if (!me.IsUndefined() && !me.IsNull()) {
      if (!me.IsObject()) op.Invalid("maxEntries must be an object");
      max_entries = me.As<Napi::Object>();
      have_max_entries = true;
    }
  }
  // A verifier log asked for explicitly is printed by libbpf at debug level.
  debug_log_ = log_level > 0;

  bpf_object_open_opts opts;
  memset(&opts, 0, sizeof(opts));  // libbpf rejects opts with non-zero unknown bytes
  opts.sz = sizeof(opts);
  opts.pin_root_path = pin_root.empty() ? nullptr : pin_root.c_str();
  opts.kernel_log_level = log_level;

  ObjectPtr obj;  // closes the half-configured object if an override fails
  {
    LogCapture cap(debug_log_);
    errno = 0;
    bpf_object* o = bpf_object__open_file(path_.c_str(), &opts);
    int err = errno;
    log_ = cap.text();
    if (o == nullptr) {
      op.FailWithLog(err, ErrnoName(err), "", LogCapture::Tail(log_, kLogTail));
    }
    obj.reset(o);
  }

  if (have_max_entries) {
    Napi::Array names = max_entries.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = max_entries.Get(name);
      if (!v.IsNumber()) {
        op.Invalid("maxEntries." + name + " must be a number");
      }
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 1 && d <= 4294967295.0) || static_cast<double>(static_cast<uint32_t>(d)) != d) {
        op.Invalid("maxEntries." + name + " must be an integer in 1..2^32-1");
      }
      bpf_map* m = bpf_object__find_map_by_name(obj.get(), name.c_str());
      if (m == nullptr) {
        op.Fail(ENOENT, "maxEntries names unknown map '" + name + "'");
      }
      int ret = bpf_map__set_max_entries(m, static_cast<uint32_t>(d));
      if (ret < 0) {
        op.Fail(NegErr(ret), "bpf_map__set_max_entries('" + name + "')");
      }
    }
  }
  obj_ = std::move(obj);
}

Napi::Value NativeBpfObject::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "object_load");
  op.subject = "path=" + path_;
  bpf_object* o = Live(op);
  // libbpf marks an object loaded even when loading fails; a second attempt
  // would only produce a confusing "load can't be attempted twice".
  if (load_attempted_) op.Fail(EALREADY, "load() was already called on this object");
  load_attempted_ = true;

  LogCapture cap(debug_log_);
  int ret = bpf_object__load(o);
  log_ = cap.text();
  if (ret < 0) {
    int err = NegErr(ret);
    // libbpf prints the kernel's log after this warning only when a program
    // was rejected with a verifier log (with kernelLogLevel > 0 logs of
    // successfully loaded programs appear too, hence anchoring on the warning).
    size_t failed = log_.rfind("BPF program load failed");
    bool verifier = failed != std::string::npos &&
                    log_.find("BEGIN PROG LOAD LOG", failed) != std::string::npos;
    op.FailWithLog(err, verifier ? "SM_VERIFIER" : ErrnoName(err), "",
                   LogCapture::Tail(log_, kLogTail));
  }
  loaded_ = true;
  return env.Undefined();
}

int FdOrMinus1(int fd) { return fd >= 0 ? fd : -1; }

Napi::Value NativeBpfObject::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "object_programs");
  op.subject = "path=" + path_;
  bpf_object* o = Live(op);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, o) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", bpf_program__name(p));
    const char* sec = bpf_program__section_name(p);
    d.Set("section", sec != nullptr ? sec : "");
    d.Set("progType", static_cast<double>(bpf_program__type(p)));
    d.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(p)));
    d.Set("fd", FdOrMinus1(loaded_ ? bpf_program__fd(p) : -1));
    out.Set(i++, d);
  }
  return out;
}

Napi::Value NativeBpfObject::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op op(env, "object_maps");
  op.subject = "path=" + path_;
  bpf_object* o = Live(op);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_map* m;
  bpf_object__for_each_map(m, o) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", bpf_map__name(m));
    d.Set("fd", FdOrMinus1(loaded_ ? bpf_map__fd(m) : -1));
    d.Set("type", static_cast<double>(bpf_map__type(m)));
    d.Set("keySize", static_cast<double>(bpf_map__key_size(m)));
    d.Set("valueSize", static_cast<double>(bpf_map__value_size(m)));
    d.Set("maxEntries", static_cast<double>(bpf_map__max_entries(m)));
    d.Set("internal", bpf_map__is_internal(m));
    const char* pin = bpf_map__pin_path(m);
    if (pin != nullptr) d.Set("pinPath", pin);
    out.Set(i++, d);
  }
  return out;
}

Napi::Value NativeBpfObject::Close(const Napi::CallbackInfo& info) {
  obj_.reset();
  loaded_ = false;
  return info.Env().Undefined();
}

}  // namespace

void InitObject(Napi::Env env, Napi::Object exports) {
  LogCapture::InstallOnce();
  Napi::Function ctor = NativeBpfObject::Define(env);
  env.GetInstanceData<AddonData>()->objectCtor = Napi::Persistent(ctor);
  exports.Set("NativeBpfObject", ctor);
  exports.Set("objectOpen", Napi::Function::New(env, NativeBpfObject::Open, "objectOpen"));
}

}  // namespace smbpf
