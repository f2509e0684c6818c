// The live protocol (the kernel's text_poke_bp, in user space), with rollback.
#pragma once

#include <span>
#include <string_view>

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

#include "checked_site.hpp"

namespace punch::patcher::live {

//! Moves every site from its `from` to its `to` bytes, two syncs for the
//! whole batch: trap byte over each first byte, sync (for multi-instruction
//! sites the thread fix-up round, which serializes every thread, is that
//! sync); bytes [1,n), sync; first bytes (the kernel's third sync is left to
//! reclamation, see live_protocol.cpp). Sites that
//! share a container and lie within 1 KiB of each other are written with one
//! write per step. On failure every site is restored to `from`, or a
//! kInconsistent error says which site holds which bytes. `what` names the
//! operation in messages ("commit", "revert"). Call under the live lock.
Status run_protocol(const CheckedBatch& batch, const TransactionOptions& options, std::string_view what);

}  // namespace punch::patcher::live
