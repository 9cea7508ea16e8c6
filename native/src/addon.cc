#include "common.h"

namespace smbpf {

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Per-environment state, so the addon also works when loaded by workers.
  env.SetInstanceData<AddonData>(new AddonData());
  InitErrors(env, exports);
  InitObject(env, exports);
  InitMaps(env, exports);
  InitProgs(env, exports);
  InitFiles(env, exports);
  InitNetns(env, exports);
  InitFdPass(env, exports);
  InitConsts(env, exports);
  InitProbes(env, exports);
  return exports;
}

}  // namespace

}  // namespace smbpf

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return smbpf::Init(env, exports);
}

NODE_API_MODULE(sockmesh_bpf, InitModule)
