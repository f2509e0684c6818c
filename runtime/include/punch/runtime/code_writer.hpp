// punch::runtime::CodeWriter — the one way bytes reach executable memory.
//
// Executable pages are mapped PROT_READ|PROT_EXEC and never made writable.
// The default method writes through /proc/self/mem, which the kernel performs
// with FOLL_FORCE: the write "punches through" the page protection of a
// MAP_PRIVATE mapping (the page is copied on write; files and other processes
// are untouched). See docs/design.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include <punch/result.hpp>

namespace punch::runtime {

//! How bytes are written into executable memory.
enum class WriteMethod {
  kProcMem,   //!< pwrite on /proc/self/mem into R+X MAP_PRIVATE pages (default; no writable alias ever).
  kDualMap,   //!< memfd mapped twice: an R+X view and an RW view (for hosts that refuse anonymous exec memory).
  kMprotect,  //!< toggle RW/RX around each write; last resort, never RWX, refused under MDWE.
};

//! "proc-mem", "dual-map" or "mprotect".
std::string_view to_string(WriteMethod method) noexcept;

//! Parses a method name; "auto" gives std::nullopt (probe and pick). Unknown names are an error.
Result<std::optional<WriteMethod>> parse_write_method(std::string_view name);

//! A range of executable memory mapped by a CodeWriter.
struct CodeRegion {
  std::uintptr_t address = 0;  //!< Start of the R+X view (page aligned).
  std::size_t size = 0;        //!< Bytes, a multiple of the page size.
};

//! An inclusive-exclusive address window [lo, hi) that an allocation must lie in entirely.
struct AddressWindow {
  std::uintptr_t lo = 0;
  std::uintptr_t hi = UINTPTR_MAX;

  //! Every address from which a rel32 displacement reaches `target` (and back).
  static AddressWindow rel32_reach(std::uintptr_t target) noexcept;
  //! The intersection of two windows (may be empty: lo >= hi).
  AddressWindow intersect(AddressWindow other) const noexcept;
  bool empty() const noexcept { return lo >= hi; }
  bool contains(std::uintptr_t a, std::size_t size) const noexcept { return a >= lo && a <= hi && size <= hi - a; }
};

//! Writes bytes into executable memory, and maps the executable memory it can write.
//!
//! Thread-safe. Writing does not synchronize instruction streams: callers that
//! change code another thread may run use the patcher's live protocol, and
//! callers that hand out fresh code call `sync_all_threads()` (see sync.hpp).
class CodeWriter {
  struct State;

 public:
  //! The process-wide writer. On first use its method is taken from the
  //! environment variable PUNCH_WRITE_METHOD (auto|proc-mem|dual-map|mprotect,
  //! default auto: the first method a probe proves works). An unknown value, or
  //! an explicit method that does not work here, is an error (never a silent fallback).
  static Result<CodeWriter*> global();

  //! A writer with an explicit method, probed before it is returned.
  static Result<std::unique_ptr<CodeWriter>> create(WriteMethod method);

  //! A writer from a name as PUNCH_WRITE_METHOD spells it; "auto" tries
  //! proc-mem, dual-map, mprotect in that order and errors with every reason.
  static Result<std::unique_ptr<CodeWriter>> from_name(std::string_view name);

  ~CodeWriter();
  CodeWriter(const CodeWriter&) = delete;
  CodeWriter& operator=(const CodeWriter&) = delete;

  WriteMethod method() const noexcept;

  //! Writes `bytes` at `address`, whole or not at all as far as the kernel allows
  //! (EINTR and short writes are retried; EIO is reported, never looped on).
  //! Under dual-map only memory this writer mapped can be written.
  Status write(std::uintptr_t address, std::span<const std::uint8_t> bytes);

  //! One range of a write_each() batch.
  struct Piece {
    std::uintptr_t address = 0;
    std::span<const std::uint8_t> bytes;
  };

  //! Writes `pieces` in order, each as write() would, and stops at the first
  //! that fails: `written` is then its index (every piece before it is
  //! written) and the error is that piece's. The work write() does per call
  //! around the system call is done once per batch here, which made the live
  //! protocol's writes to a thousand pages 10-15 ns cheaper each.
  Status write_each(std::span<const Piece> pieces, std::size_t& written);

  //! While it lives, only the thread that made it writes through this writer
  //! (the others wait), and that thread's writes take no lock. A live change
  //! takes it before it holds the other threads still: a thread paused inside
  //! a write would otherwise hold the writer's lock for as long as the change
  //! waits for it. Made by exclusive(); movable.
  class Exclusive {
   public:
    Exclusive(Exclusive&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
    Exclusive& operator=(Exclusive&&) = delete;
    ~Exclusive();

   private:
    friend class CodeWriter;
    explicit Exclusive(State* state) noexcept : state_(state) {}
    State* state_;
  };

  //! Waits until no other thread writes, and keeps them out (see Exclusive).
  //! Not reentrant: at most one per thread at a time.
  Exclusive exclusive();

  //! Maps `size` bytes (rounded up to pages) of fresh R+X code memory, filled
  //! with int3, lying entirely within `window` (for rel32 reach). Never RWX;
  //! under proc-mem and mprotect the mapping is MAP_PRIVATE|MAP_ANONYMOUS.
  Result<CodeRegion> map_code(std::size_t size, AddressWindow window = {});

  //! Unmaps a region returned by map_code (and its RW view under dual-map).
  Status unmap_code(CodeRegion region);

 private:
  explicit CodeWriter(std::unique_ptr<State> state);
  // write() without the up-front check that a multi-page range is mapped
  // (for memory the writer has just mapped itself).
  Status write_unchecked(std::uintptr_t address, std::span<const std::uint8_t> bytes);
  std::unique_ptr<State> state_;
};

}  // namespace punch::runtime
