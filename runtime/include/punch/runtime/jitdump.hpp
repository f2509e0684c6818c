// punch::runtime jitdump — JIT code, with its bytes, for `perf inject --jit`.
//
// The jitdump file (jit-<pid>.dump, the format of linux's
// tools/perf/Documentation/jitdump-specification.txt) records every piece of
// registered code with its name, address, bytes and a CLOCK_MONOTONIC
// timestamp (JIT_CODE_LOAD), so perf names samples by the code that was at an
// address *at that time*, and `perf annotate` disassembles it. The file is
// mapped once, read+exec, so `perf record` sees it and `perf inject --jit`
// finds it; disabling it (or exit) writes JIT_CODE_CLOSE.
//
//   perf record -k 1 -e cpu-clock -o perf.data -- env PUNCH_JITDUMP=1 ./vm
//   perf inject --jit -i perf.data -o perf.jit.data
//   perf report -i perf.jit.data
//
// The format has no record for code going away: released code keeps its last
// JIT_CODE_LOAD until newer code is loaded over it (nothing runs freed code,
// which is int3, so no sample lands there meanwhile).
//
// On when the program starts with PUNCH_JITDUMP=1 set (the file goes to
// $PUNCH_JITDUMP_DIR, else /tmp), or after enable_jitdump(). After fork() the
// child writes its own file, starting with the code it inherited.
#pragma once

#include <cstddef>
#include <string>

#include <punch/result.hpp>

namespace punch::runtime {

//! Creates <directory>/jit-<pid>.dump (directory "" means $PUNCH_JITDUMP_DIR,
//! else /tmp), maps its first page read+exec as perf's marker, and records
//! every piece of code registered now. kIoError naming the path and the
//! system call that failed. Enabling while on is fine (the directory is then ignored).
Status enable_jitdump(const std::string& directory = "");

//! Writes JIT_CODE_CLOSE, unmaps the marker and closes the file. Exit does it too.
void disable_jitdump();

//! The file this process writes, or "" when jitdump is off.
std::string jitdump_path();

//! JIT_CODE_LOAD records this process has written.
std::size_t jitdump_loads();

}  // namespace punch::runtime
