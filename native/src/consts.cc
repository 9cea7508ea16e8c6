// Constants exported as `consts`. Only names are listed (consts.def, generated
// by tools/gen-consts.sh); every value is whatever <linux/bpf.h> and libc say
// at compile time.
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/magic.h>

#include "common.h"

namespace smbpf {

void InitConsts(Napi::Env env, Napi::Object exports) {
  Napi::Object c = Napi::Object::New(env);
#define SM_CONST(name) c.Set(#name, Napi::Number::New(env, static_cast<double>(name)));
#include "consts.def"
#undef SM_CONST
  c.Freeze();
  exports.Set("consts", c);
}

}  // namespace smbpf
