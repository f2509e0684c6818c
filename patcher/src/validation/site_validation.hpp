// Validation of patch sites against the code as it is now (invariant 4 and the
// write policy). The steps live in their own files: write_policy (which
// mappings may be written), site_containers (the code around sites, read and
// decoded once), new_code_rules (what replacement code must be); this is the
// driver, with the boundary and branch checks over each container.
#pragma once

#include <span>

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

#include "checked_site.hpp"

namespace punch::patcher::live {

//! Checks every site (see Transaction::validate). `mismatch` is the code
//! reported when current bytes differ from what the direction expects
//! (kBytesMismatch, or kConflict when they were validated before). Touches no
//! memory but reads, and with CopyRoom::kLook maps nothing either. The
//! result views `sites`, which must outlive it.
Result<CheckedBatch> check_sites(std::span<const Site> sites, const TransactionOptions& options, Direction direction,
                                 ErrorCode mismatch, CopyRoom room, const SiteFacts& known = {});

//! Cheap per-site checks done by Transaction::add: sizes and address overflow.
Status check_site_shape(const Site& site);

}  // namespace punch::patcher::live
