// punch — errors as values.
//
// Every fallible call in punch returns `Result<T>` (or `Status` when there is
// no value), which must not be ignored. An `Error` carries a code and an
// address a program can branch on, and a message a person can act on: it
// names the address involved and the reason. Nothing in punch throws through
// its API, aborts, or prints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace punch {

//! What went wrong, coarsely enough to branch on.
enum class ErrorCode {
  kInvalidArgument,  //!< Bad input: null, zero or overflowing size, bad alignment, unknown option.
  kNotMapped,        //!< The address (or part of the range) is not mapped.
  kNotOwned,         //!< The address was not handed out by this object, or was already freed.
  kOutOfMemory,      //!< No memory (or none within the requested reach).
  kUnsupported,      //!< The method or feature does not work on this host.
  kBlocked,          //!< The host refuses /proc/self/mem writes (EIO, e.g. proc_mem.force_override).
  kIoError,          //!< A system call failed for another reason.
  kTimeout,          //!< A bounded wait ran out (a thread that does not answer, ...).
  kDecodeFailed,     //!< Bytes do not decode to valid, whole instructions.
  kNotBoundary,      //!< A range starts or ends inside an instruction.
  kBytesMismatch,    //!< The code is not what the caller expected to find.
  kBranchInto,       //!< A known branch lands strictly inside the range.
  kUnprovable,       //!< Safety cannot be proven (indirect jumps, unknown extent, ...).
  kCannotRelocate,   //!< An instruction cannot run at another address.
  kOutOfRange,       //!< A target is out of rel32 reach and no other form exists.
  kOverlap,          //!< Two sites of one request overlap.
  kConflict,         //!< Someone else changed or owns the bytes (concurrent patch, already hooked).
  kExhausted,        //!< A bounded resource is all in use (e.g. every generation slot still held); try again later.
  kPolicy,           //!< The write policy refuses the target (not executable, not opted in).
  kInconsistent,     //!< A rollback failed; the message says which bytes are where.
};

//! A short stable name for a code, e.g. "not-boundary".
constexpr std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kNotMapped: return "not-mapped";
    case ErrorCode::kNotOwned: return "not-owned";
    case ErrorCode::kOutOfMemory: return "out-of-memory";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kBlocked: return "blocked";
    case ErrorCode::kIoError: return "io-error";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kDecodeFailed: return "decode-failed";
    case ErrorCode::kNotBoundary: return "not-boundary";
    case ErrorCode::kBytesMismatch: return "bytes-mismatch";
    case ErrorCode::kBranchInto: return "branch-into";
    case ErrorCode::kUnprovable: return "unprovable";
    case ErrorCode::kCannotRelocate: return "cannot-relocate";
    case ErrorCode::kOutOfRange: return "out-of-range";
    case ErrorCode::kOverlap: return "overlap";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kExhausted: return "exhausted";
    case ErrorCode::kPolicy: return "policy";
    case ErrorCode::kInconsistent: return "inconsistent";
  }
  return "unknown";
}

//! An error: a code to branch on, the address it is about, and a message
//! that names the address and the reason.
struct Error {
  ErrorCode code;
  std::string message;
  //! The address the error is about (the byte, instruction or site its
  //! message names first), or 0 when it is about none.
  std::uintptr_t address = 0;

  //! "not-boundary: 0x7f...: patch range ends inside `mov rax, [rip+0x10]`".
  std::string describe() const { return std::string(to_string(code)) + ": " + message; }

  //! The same error (code and address kept) with `context` before its
  //! message: "context: message". For a caller that adds what it was doing.
  Error with_context(std::string_view context) && {
    message.insert(0, std::string(context) + ": ");
    return std::move(*this);
  }
  Error with_context(std::string_view context) const& { return Error(*this).with_context(context); }
};

//! What a fallible call returns: a `T`, or an `Error`. Discarding one is a
//! compiler warning (a failed `tx.commit();` nobody looks at); discard on
//! purpose with `(void)` and a comment saying why.
template <class T>
class [[nodiscard]] Result : public tl::expected<T, Error> {
  using Base = tl::expected<T, Error>;

 public:
  using Base::Base;
  Result() = default;
  Result(Base other) : Base(std::move(other)) {}  // E.g. what and_then() returns.
};

//! A result with no value: success or an `Error`.
using Status = Result<void>;

//! Builds the error side of a `Result`: `return fail(ErrorCode::kUnsupported, "no write method works");`
inline tl::unexpected<Error> fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

//! An address as messages print it: "0x7f12a0c01000".
inline std::string at(std::uintptr_t address) {
  char buf[2 + 16 + 1];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(address));
  return buf;
}
inline std::string at(const void* address) { return at(reinterpret_cast<std::uintptr_t>(address)); }

//! The same about an address, which the message starts with and Error::address
//! holds: `return fail(ErrorCode::kNotMapped, addr, "not mapped");` gives "0x7f...: not mapped".
inline tl::unexpected<Error> fail(ErrorCode code, std::uintptr_t address, std::string message) {
  return tl::unexpected<Error>(Error{code, at(address) + ": " + message, address});
}

//! The error side of a `Result` from an `Error`, e.g. one given context:
//! `return fail(std::move(r).error().with_context("commit"));`
inline tl::unexpected<Error> fail(Error error) { return tl::unexpected<Error>(std::move(error)); }

}  // namespace punch

//! Propagates an error: `PUNCH_TRY(writer.write(...));`
#define PUNCH_TRY(expr)                                                            \
  do {                                                                             \
    if (auto punch_try_result_ = (expr); !punch_try_result_)                       \
      return tl::unexpected<::punch::Error>(std::move(punch_try_result_).error()); \
  } while (0)

//! Propagates an error, else assigns the value:
//! `PUNCH_TRY_ASSIGN(auto heap, CodeHeap::global());` declares `heap`, a `CodeHeap*`.
#define PUNCH_TRY_ASSIGN(declaration, expr) \
  PUNCH_TRY_ASSIGN_(PUNCH_TRY_CONCAT_(punch_try_value_, __LINE__), declaration, expr)
#define PUNCH_TRY_ASSIGN_(result, declaration, expr)                             \
  auto result = (expr);                                                          \
  if (!result) return tl::unexpected<::punch::Error>(std::move(result).error()); \
  declaration = std::move(*result)
#define PUNCH_TRY_CONCAT_(a, b) PUNCH_TRY_CONCAT2_(a, b)
#define PUNCH_TRY_CONCAT2_(a, b) a##b
