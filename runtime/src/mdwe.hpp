// Whether PR_SET_MDWE (Linux 6.3) is in force for this process.
#pragma once

#include <sys/prctl.h>

namespace punch::runtime::detail {

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN (1UL << 0)
#endif

//! True when mmap/mprotect may not add PROT_EXEC to memory (older kernels: false).
inline bool mdwe_in_force() noexcept {
  int flags = ::prctl(PR_GET_MDWE, 0L, 0L, 0L, 0L);
  return flags > 0 && (flags & PR_MDWE_REFUSE_EXEC_GAIN);
}

}  // namespace punch::runtime::detail
