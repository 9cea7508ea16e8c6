// Guards against passing the wrong kind of BPF fd to *_get_info_by_fd: the
// kernel fills whatever info struct matches the fd, so a prog fd given where a
// map fd is expected yields garbage sizes instead of an error.
#pragma once

#include <linux/bpf.h>

#include <string>

#include "common.h"

namespace smbpf {

enum class FdKind { kMap, kProg, kLink };

// Throws EINVAL through op when /proc says fd is some other kind of object.
// When /proc cannot answer, the subsequent syscall does the validation.
void CheckFdKind(int fd, FdKind kind, const Op& op);

bpf_map_info GetMapInfo(int fd, const Op& op);

// Bytes the kernel copies for one value in lookup/update syscalls (per-CPU
// maps hold one 8-byte-aligned slot per possible CPU).
size_t SyscallValueSize(const bpf_map_info& info, const Op& op);

}  // namespace smbpf
