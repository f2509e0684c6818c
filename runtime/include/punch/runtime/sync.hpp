// punch::runtime sync — make every thread of the process see the code as it is now.
//
// x86 keeps instruction fetch coherent with data writes, but a thread may hold
// already-fetched (stale) instruction bytes until it executes a serializing
// instruction. After cross-modifying code, every thread must serialize before
// it can be trusted to run the new bytes.
#pragma once

#include <chrono>
#include <string_view>

#include <punch/result.hpp>
#include <punch/runtime/serialize.hpp>

namespace punch::runtime {

//! How sync_all_threads reaches the other threads.
enum class SyncMethod {
  kMembarrier,  //!< membarrier(PRIVATE_EXPEDITED_SYNC_CORE), registered once.
  kSignals,     //!< tgkill every thread; its handler serializes; wait for every answer.
};

std::string_view to_string(SyncMethod method) noexcept;

//! The method in use (decided on first use: membarrier when it registers, else signals).
SyncMethod sync_method();

//! Whether membarrier(PRIVATE_EXPEDITED_SYNC_CORE) serializes the calling
//! thread too: Linux 5.10 and later (commit e45cdc71d1fa), decided once from
//! uname. Where it does, a sync through membarrier does not serialize the
//! caller a second time.
bool membarrier_serializes_caller();

//! Returns when every thread of the process, the caller included, has
//! executed a core-serializing instruction. With the signal fallback, a thread
//! that does not answer within `timeout` gives a kTimeout error naming its tid.
//! Whatever the result, the calling thread has serialized itself.
Status sync_all_threads(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

}  // namespace punch::runtime
