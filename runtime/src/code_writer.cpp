#include <punch/runtime/code_writer.hpp>

#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/maps.hpp>
#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/safe_read.hpp>

#include "fault_seam.hpp"
#include "placement.hpp"
#include "proc_mem.hpp"
#include "valgrind_discard.hpp"
#include "write_methods.hpp"

namespace punch::runtime {

std::string_view to_string(WriteMethod method) noexcept {
  switch (method) {
    case WriteMethod::kProcMem: return "proc-mem";
    case WriteMethod::kDualMap: return "dual-map";
    case WriteMethod::kMprotect: return "mprotect";
  }
  return "unknown";
}

Result<std::optional<WriteMethod>> parse_write_method(std::string_view name) {
  if (name == "auto") return std::optional<WriteMethod>{};
  for (WriteMethod m : {WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect})
    if (name == to_string(m)) return std::optional<WriteMethod>{m};
  return fail(ErrorCode::kInvalidArgument,
              "unknown write method \"" + std::string(name) + "\" (expected auto, proc-mem, dual-map or mprotect)");
}

AddressWindow AddressWindow::rel32_reach(std::uintptr_t target) noexcept {
  // A little less than 2 GiB each way, so that an instruction anywhere in the
  // window (its end, not its start, is what rel32 counts from) still reaches.
  constexpr std::uintptr_t kReach = 0x7fff0000;
  AddressWindow w;
  w.lo = target > kReach ? target - kReach : 0;
  w.hi = target < UINTPTR_MAX - kReach ? target + kReach : UINTPTR_MAX;
  return w;
}

AddressWindow AddressWindow::intersect(AddressWindow other) const noexcept {
  return AddressWindow{std::max(lo, other.lo), std::min(hi, other.hi)};
}

namespace {

constexpr std::uint8_t kInt3 = 0xCC;

using detail::range_text;

// Whether [address, address+size) lies within one page. (No bit at or above
// the page size differs; no division: this runs on every write.)
bool within_one_page(std::uintptr_t address, std::size_t size) {
  return size > 0 && (address ^ (address + size - 1)) < detail::page_size();
}

// Whether one byte of every page of the range reads back (one system call).
bool every_page_readable(std::uintptr_t address, std::size_t size) {
  const std::uintptr_t page = detail::page_size();
  const std::uintptr_t first = address & ~(page - 1);
  const std::size_t pages = ((address + size - 1) & ~(page - 1)) / page - first / page + 1;
  if (pages > 1024) return false;  // IOV_MAX; let the caller check the long way.
  std::vector<iovec> remote(pages);
  for (std::size_t i = 0; i < pages; ++i)
    remote[i] = iovec{reinterpret_cast<void*>(std::max(address, first + i * page)), 1};
  std::vector<std::uint8_t> sink(pages);
  iovec local{sink.data(), pages};
  return ::process_vm_readv(::getpid(), &local, 1, remote.data(), pages, 0) == static_cast<ssize_t>(pages);
}

}  // namespace

struct CodeWriter::State {
  explicit State(WriteMethod m) : method(m) {}

  WriteMethod method;
  ForkSafeMutex mutex{LockRank::kWriter};     // Guards `regions` and mprotect toggling.
  std::atomic<pid_t> exclusive_owner{0};      // The thread whose Exclusive holds `mutex`, if any.
  std::vector<detail::WriterRegion> regions;  // What map_code returned (under dual-map with its RW view).

  // `mutex` for a write, unless this thread holds it already through an Exclusive.
  class WriteLock {
   public:
    explicit WriteLock(State& state)
        : mutex_(state.exclusive_owner.load(std::memory_order_relaxed) == raw_gettid() ? nullptr : &state.mutex) {
      if (mutex_) mutex_->lock();
    }
    ~WriteLock() {
      if (mutex_) mutex_->unlock();
    }
    WriteLock(const WriteLock&) = delete;
    WriteLock& operator=(const WriteLock&) = delete;

   private:
    ForkSafeMutex* mutex_;
  };

  // One attempt to write part of `bytes` at `address` (see write_methods.hpp).
  long write_some(std::uintptr_t address, std::span<const std::uint8_t> bytes, std::optional<Error>& error) {
    if (method == WriteMethod::kProcMem) return detail::write_by_proc_mem(address, bytes, error);
    WriteLock guard(*this);  // The regions list, and mprotect's toggling of pages.
    if (method == WriteMethod::kDualMap) return detail::write_by_dual_map(regions, address, bytes, error);
    return detail::write_by_mprotect(regions, address, bytes, error);
  }
};

CodeWriter::CodeWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}

CodeWriter::~CodeWriter() {
  for (const detail::WriterRegion& r : state_->regions) {
    ::munmap(reinterpret_cast<void*>(r.rx.address), r.rx.size);
    if (r.rw) ::munmap(reinterpret_cast<void*>(r.rw), r.rx.size);
  }
}

WriteMethod CodeWriter::method() const noexcept { return state_->method; }

Status CodeWriter::write(std::uintptr_t address, std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return {};
  if (address == 0 || bytes.size() > UINTPTR_MAX - address)
    return fail(
        Error{ErrorCode::kInvalidArgument, range_text(address, bytes.size()) + ": null or overflowing range", address});

  // A range over several pages may run into a hole after part of it was
  // written; read it first so such a write fails before changing anything.
  if (state_->method == WriteMethod::kProcMem && !within_one_page(address, bytes.size()) &&
      !every_page_readable(address, bytes.size())) {
    std::vector<std::uint8_t> current(bytes.size());  // Slow path: also sees pages that are mapped PROT_NONE.
    auto readable = safe_read(address, current);
    if (!readable || *readable < bytes.size())
      return fail(ErrorCode::kNotMapped, address + (readable ? *readable : 0),
                  "not mapped (writing " + range_text(address, bytes.size()) + "; nothing written)");
  }
  return write_unchecked(address, bytes);
}

Status CodeWriter::write_each(std::span<const Piece> pieces, std::size_t& written) {
  // The usual case in one tight loop: proc-mem, no fault armed, a piece
  // within one page written whole by one pwrite. Any other piece goes
  // through write(), for its checks, its retries and its exact error
  // (rewriting what a short pwrite already wrote is harmless: same bytes).
  const bool direct = state_->method == WriteMethod::kProcMem && !detail::fault_armed(testing::FaultPoint::kWrite);
  const int fd = direct ? detail::proc_mem_fd().value_or(-1) : -1;
  for (written = 0; written < pieces.size(); ++written) {
    const Piece& piece = pieces[written];
    if (fd >= 0 && piece.address != 0 && within_one_page(piece.address, piece.bytes.size()) &&
        raw_syscall(SYS_pwrite64, fd, reinterpret_cast<long>(piece.bytes.data()), static_cast<long>(piece.bytes.size()),
                    static_cast<long>(piece.address)) == static_cast<long>(piece.bytes.size())) {
      detail::discard_stale_translations(piece.address, piece.bytes.size());
      continue;
    }
    PUNCH_TRY(write(piece.address, piece.bytes));
  }
  return {};
}

Status CodeWriter::write_unchecked(std::uintptr_t address, std::span<const std::uint8_t> bytes) {
  auto fault = detail::take_fault(testing::FaultPoint::kWrite);  // Replaces the first attempt, when armed.
  std::size_t done = 0;
  while (done < bytes.size()) {
    std::optional<Error> error;
    const auto rest = bytes.subspan(done);
    auto attempt = [&](std::span<const std::uint8_t> part) { return state_->write_some(address + done, part, error); };
    const long n = detail::attempt_with_fault(std::exchange(fault, std::nullopt), rest, attempt);
    if (error) return tl::unexpected(std::move(*error));
    if (n == -EINTR) continue;  // Interrupted before writing anything: try again.
    if (n == -EIO) {
      // Never looped on: either the range is not mapped or the kernel refuses.
      std::uintptr_t where = address + done;
      auto m = find_mapping(where);
      if (!m)
        return fail(ErrorCode::kNotMapped, where, "not mapped (writing " + range_text(address, bytes.size()) + ")");
      if (m->end - where < rest.size())
        return fail(ErrorCode::kNotMapped, m->end,
                    "not mapped (writing " + range_text(address, bytes.size()) +
                        (done ? ", " + std::to_string(done) + " bytes written" : std::string()) + ")");
      return fail(Error{ErrorCode::kBlocked,
                        range_text(where, rest.size()) + ": /proc/self/mem write refused with EIO" +
                            (m->shared ? " (a MAP_SHARED mapping)" : " (proc_mem.force_override?)"),
                        where});
    }
    if (n < 0)
      return fail(
          Error{ErrorCode::kIoError,
                range_text(address + done, rest.size()) + ": write failed: " + std::strerror(static_cast<int>(-n)),
                address + done});
    if (n == 0)
      return fail(Error{ErrorCode::kIoError, range_text(address + done, rest.size()) + ": write made no progress",
                        address + done});
    detail::discard_stale_translations(address + done, static_cast<std::size_t>(n));
    done += static_cast<std::size_t>(n);  // A short write: the rest goes in the next round.
  }
  return {};
}

CodeWriter::Exclusive CodeWriter::exclusive() {
  state_->mutex.lock();
  state_->exclusive_owner.store(raw_gettid(), std::memory_order_relaxed);
  return Exclusive(state_.get());
}

CodeWriter::Exclusive::~Exclusive() {
  if (!state_) return;
  state_->exclusive_owner.store(0, std::memory_order_relaxed);
  state_->mutex.unlock();
}

Result<CodeRegion> CodeWriter::map_code(std::size_t size, AddressWindow window) {
  const std::size_t page = detail::page_size();
  if (size == 0 || size > SIZE_MAX - page)
    return fail(ErrorCode::kInvalidArgument, "map_code: bad size " + std::to_string(size));
  size = (size + page - 1) & ~(page - 1);

  detail::WriterRegion region;
  if (state_->method == WriteMethod::kDualMap) {
    auto dual = detail::map_dual_region(size, window);
    if (!dual) return tl::unexpected(std::move(dual).error());
    region = *dual;
  } else {
    auto rx = detail::map_in_window(size, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, window);
    if (!rx) return tl::unexpected(std::move(rx).error());
    region.rx = CodeRegion{*rx, size};
    // Fill with int3 through the writer itself: the mapping is never writable.
    static const auto kTraps = [] {
      std::array<std::uint8_t, 65536> a;
      a.fill(kInt3);
      return a;
    }();
    for (std::size_t off = 0; off < size; off += kTraps.size()) {
      auto filled = write_unchecked(*rx + off, std::span(kTraps).first(std::min(kTraps.size(), size - off)));
      if (!filled) {
        ::munmap(reinterpret_cast<void*>(*rx), size);
        return tl::unexpected(std::move(filled).error());
      }
    }
  }
  std::lock_guard guard(state_->mutex);
  state_->regions.push_back(region);
  return region.rx;
}

Status CodeWriter::unmap_code(CodeRegion region) {
  std::lock_guard guard(state_->mutex);
  auto& regions = state_->regions;
  auto it = std::find_if(regions.begin(), regions.end(), [&](const detail::WriterRegion& r) {
    return r.rx.address == region.address && r.rx.size == region.size;
  });
  if (it == regions.end())
    return fail(Error{ErrorCode::kNotOwned,
                      range_text(region.address, region.size) + ": not a region this writer mapped", region.address});
  ::munmap(reinterpret_cast<void*>(it->rx.address), it->rx.size);
  if (it->rw) ::munmap(reinterpret_cast<void*>(it->rw), it->rx.size);
  regions.erase(it);
  return {};
}

namespace {

// Proves a fresh writer works: maps a page, writes a pattern, reads it back.
Status self_test(CodeWriter& writer) {
  auto region = writer.map_code(1);
  if (!region) return tl::unexpected(std::move(region).error());
  const std::array<std::uint8_t, 4> pattern{0x90, 0x0f, 0x0b, 0xc3};  // nop; ud2; ret
  const std::uintptr_t where = region->address + 64;
  Status written = writer.write(where, pattern);
  bool same = written && std::memcmp(reinterpret_cast<const void*>(where), pattern.data(), pattern.size()) == 0;
  (void)writer.unmap_code(*region);
  if (!written) return written;
  if (!same) return fail(ErrorCode::kIoError, where, "the bytes written did not read back");
  return {};
}

}  // namespace

Result<std::unique_ptr<CodeWriter>> CodeWriter::create(WriteMethod method) {
  std::unique_ptr<CodeWriter> writer(new CodeWriter(std::make_unique<State>(method)));
  if (Status ok = self_test(*writer); !ok)
    return fail(
        std::move(ok).error().with_context("write method " + std::string(to_string(method)) + " does not work here"));
  return writer;
}

Result<std::unique_ptr<CodeWriter>> CodeWriter::from_name(std::string_view name) {
  auto parsed = parse_write_method(name);
  if (!parsed) return tl::unexpected(std::move(parsed).error());
  if (*parsed) return create(**parsed);
  std::string reasons;
  for (WriteMethod m : {WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect}) {
    auto writer = create(m);
    if (writer) return writer;
    reasons += (reasons.empty() ? "" : "; ") + writer.error().message;
  }
  return fail(ErrorCode::kUnsupported, "no write method works here: " + reasons);
}

namespace {

// The process-wide writer is built on first use: choosing its method probes
// the host, which a program that links punch but never uses it should not
// pay for at load. Not a function-local static: a fork while another thread
// is inside the first use would leave the child's copy of the static's
// initialization guard taken by a thread that does not exist there, and the
// child's first call would wait forever. The lock that guards the building
// is fork-safe (a fork waits until the building is over), and is itself
// built while the program loads. Leaked on purpose, like the writer, so that
// code running during exit can still use them.
ForkSafeMutex& global_writer_mutex() {
  static auto* m = new ForkSafeMutex(LockRank::kWriter);
  return *m;
}
[[maybe_unused]] const bool g_global_writer_mutex_built = (static_cast<void>(global_writer_mutex()), true);
std::atomic<Result<std::unique_ptr<CodeWriter>>*> g_global_writer{nullptr};  // Decided once.

}  // namespace

Result<CodeWriter*> CodeWriter::global() {
  auto* chosen = g_global_writer.load(std::memory_order_acquire);
  if (!chosen) {
    std::lock_guard guard(global_writer_mutex());
    chosen = g_global_writer.load(std::memory_order_relaxed);
    if (!chosen) {
      const char* env = std::getenv("PUNCH_WRITE_METHOD");
      auto r = from_name(env && *env ? env : "auto");
      if (!r && env && *env) r = fail(std::move(r).error().with_context("PUNCH_WRITE_METHOD=" + std::string(env)));
      chosen = new Result<std::unique_ptr<CodeWriter>>(std::move(r));
      g_global_writer.store(chosen, std::memory_order_release);
    }
  }
  if (!*chosen) return tl::unexpected(chosen->error());
  return chosen->value().get();
}

}  // namespace punch::runtime
