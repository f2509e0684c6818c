// punch::patcher::Transaction — validated live patches of code other threads may be running.
//
// A transaction holds sites (address, expected current bytes, new bytes). It
// validates every site against the code as it is now, then applies all of
// them with the kernel's text_poke_bp int3 protocol, paying three syncs for
// the whole batch. revert() restores exactly the bytes that were there. See
// docs/design.md and live_protocol.cpp for the protocol.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <punch/disasm/validate.hpp>
#include <punch/result.hpp>

namespace punch::patcher {

//! One place to change.
struct Site {
  std::uintptr_t address = 0;
  std::vector<std::uint8_t> expected;     //!< The bytes that must be there now.
  std::vector<std::uint8_t> replacement;  //!< The bytes to put there (same length as expected).
  //! The extent of the code that holds the site, for the branch scan. When
  //! unset: the ELF symbol that holds the address, else the punch heap
  //! allocation that holds it, else a bounded scan (documented in the error).
  std::optional<disasm::FunctionExtent> function;
};

//! The byte written first over each site (step 1 of the protocol).
enum class TrapInstruction {
  kInt3,  //!< 0xCC, SIGTRAP. The default.
  kHlt,   //!< 0xF4, SIGSEGV in user mode: for patching under a debugger that owns SIGTRAP.
};

//! The trap from PUNCH_TRAP=int3|hlt (default int3).
TrapInstruction default_trap_instruction();

struct TransactionOptions {
  TrapInstruction trap = default_trap_instruction();
  //! How long a commit waits for every thread to answer the fix-up round.
  std::chrono::milliseconds thread_timeout{1000};
  //! Write policy: allow sites in mappings that are not executable (data, GOT). Off by default.
  bool allow_non_executable = false;
  //! Allow sites in functions with indirect jumps (the branch scan cannot prove them safe).
  bool allow_unprovable = false;
};

//! A batch of sites applied and reverted as one.
//!
//! Thread-safe against other transactions: commits and reverts of all
//! transactions in the process are serialized; a site whose bytes changed
//! since validation is refused, not applied.
class Transaction {
 public:
  explicit Transaction(TransactionOptions options = {});
  ~Transaction();  //!< Does not revert: committed patches stay.
  Transaction(Transaction&&) noexcept;
  Transaction& operator=(Transaction&&) noexcept;

  //! Adds a site. Only cheap checks here (sizes, overlap with sites already added).
  Status add(Site site);

  //! Validates every site against the code as it is now, touching nothing.
  Status validate() const;

  //! Validates, then applies every site with the live protocol. On any
  //! failure, memory is exactly as it was (or a kInconsistent error says
  //! which sites hold which bytes if even the rollback failed).
  Status commit();

  //! Restores the original bytes of a committed transaction, with the same protocol.
  Status revert();

  bool committed() const noexcept;
  std::span<const Site> sites() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace punch::patcher
