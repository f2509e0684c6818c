// The jitdump sink: JIT_CODE_LOAD records with the code's bytes.
#include <punch/runtime/jitdump.hpp>

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/safe_read.hpp>

#include "code_events.hpp"
#include "proc_self_fd.hpp"
#include "tool_file.hpp"

namespace punch::runtime {
namespace {

// The file layout (all fields in host byte order).
constexpr std::uint32_t kMagic = 0x4A695444;  // "JiTD" read as a little-endian word.
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kCodeLoad = 0;
constexpr std::uint32_t kCodeClose = 3;

struct FileHeader {
  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::uint32_t total_size = sizeof(FileHeader);
  std::uint32_t elf_mach = EM_X86_64;
  std::uint32_t pad1 = 0;
  std::uint32_t pid = 0;
  std::uint64_t timestamp = 0;
  std::uint64_t flags = 0;  // Timestamps are CLOCK_MONOTONIC, not the TSC.
};
static_assert(sizeof(FileHeader) == 40);

struct RecordHeader {
  std::uint32_t id = 0;
  std::uint32_t total_size = 0;
  std::uint64_t timestamp = 0;
};

struct CodeLoad {  // Followed by the NUL-terminated name and the code bytes.
  RecordHeader header;
  std::uint32_t pid = 0;
  std::uint32_t tid = 0;
  std::uint64_t vma = 0;
  std::uint64_t code_addr = 0;
  std::uint64_t code_size = 0;
  std::uint64_t code_index = 0;
};
static_assert(sizeof(CodeLoad) == 56);

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Jitdump {
  ForkSafeMutex mutex{LockRank::kCodeNames};
  std::atomic<bool> on{false};  // Read without the lock: one load per batch when off.
  int fd = -1;
  pid_t pid = 0;  // The process the open file belongs to.
  void* marker = nullptr;
  std::size_t marker_size = 0;
  std::string directory;
  std::string path;
  std::uint64_t next_index = 0;
  std::size_t loads = 0;
};

// Built while the program loads (see CodeWriter::global); never destroyed.
Jitdump& jitdump() {
  static auto* dump = new Jitdump;
  return *dump;
}

// One JIT_CODE_LOAD; timestamp and code_index are filled in under the lock.
void append_load(std::vector<std::uint8_t>& out, std::uintptr_t address, std::string_view name,
                 std::span<const std::uint8_t> bytes) {
  CodeLoad load;
  load.header.id = kCodeLoad;
  load.header.total_size = static_cast<std::uint32_t>(sizeof load + name.size() + 1 + bytes.size());
  load.pid = static_cast<std::uint32_t>(detail::current_pid());
  load.tid = static_cast<std::uint32_t>(::gettid());
  load.vma = load.code_addr = address;
  load.code_size = bytes.size();
  const auto* raw = reinterpret_cast<const std::uint8_t*>(&load);
  out.insert(out.end(), raw, raw + sizeof load);
  out.insert(out.end(), name.begin(), name.end());
  out.push_back(0);
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// Stamps the records in `records` (in file order) and appends them. Caller
// holds the lock. Records are packed, not aligned: fields are patched with memcpy.
void write_records_locked(Jitdump& dump, std::vector<std::uint8_t>& records) {
  if (dump.fd < 0) return;
  std::size_t loads = 0;
  const std::uint64_t now = monotonic_ns();  // Under the lock: timestamps never go back in the file.
  for (std::size_t at = 0; at < records.size();) {
    RecordHeader header;
    std::memcpy(&header, records.data() + at, sizeof header);
    std::memcpy(records.data() + at + offsetof(RecordHeader, timestamp), &now, sizeof now);
    if (header.id == kCodeLoad) {
      const std::uint64_t index = dump.next_index++;
      std::memcpy(records.data() + at + offsetof(CodeLoad, code_index), &index, sizeof index);
      ++loads;
    }
    at += header.total_size;
  }
  if (detail::write_all(dump.fd, records.data(), records.size())) dump.loads += loads;
}

// Records the code registered now (read back from memory, safely: it may be
// released meanwhile). Caller holds the lock.
void record_existing_locked(Jitdump& dump) {
  std::vector<std::uint8_t> records;
  for (const CodeInfo& code : registered_code())
    if (auto bytes = safe_read_exact(code.start, code.size)) append_load(records, code.start, code.name, *bytes);
  if (!records.empty()) write_records_locked(dump, records);
}

// Creates this process's file, its header and marker (dropping a parent's,
// in a fork child), and records everything registered now, which includes
// any batch being announced. Caller holds the lock.
Status open_locked(Jitdump& dump, const std::string& directory) {
  if (dump.fd >= 0) {  // The parent's file and marker: not this process's.
    ::munmap(dump.marker, dump.marker_size);
    ::close(dump.fd);
    dump.fd = -1;
    dump.on.store(false);
  }
  const pid_t pid = detail::current_pid();
  std::string path = directory + "/jit-" + std::to_string(pid) + ".dump";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(ErrorCode::kIoError, path + ": cannot create the jitdump file: " + std::strerror(errno));
  FileHeader header;
  header.pid = static_cast<std::uint32_t>(pid);
  header.timestamp = monotonic_ns();
  if (!detail::write_all(fd, &header, sizeof header)) {
    const int err = errno;
    ::close(fd);
    return fail(ErrorCode::kIoError, path + ": cannot write the jitdump header: " + std::strerror(err));
  }
  // perf learns of the file from this mapping (an executable mapping is
  // recorded without --data). A fresh read+exec mapping of a file, never
  // writable: allowed under PR_SET_MDWE too.
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* marker = ::mmap(nullptr, page, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
  if (marker == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return fail(ErrorCode::kIoError, path + ": cannot map the jitdump marker read+exec: " + std::strerror(err));
  }
  dump.fd = fd;
  dump.pid = pid;
  dump.marker = marker;
  dump.marker_size = page;
  dump.directory = directory;
  dump.path = std::move(path);
  dump.next_index = 0;
  dump.loads = 0;
  dump.on.store(true);  // From here every new piece of code is recorded.
  record_existing_locked(dump);
  return {};
}

void close_locked(Jitdump& dump) {
  if (dump.fd < 0) return;
  std::vector<std::uint8_t> close_record(sizeof(RecordHeader));
  RecordHeader header;
  header.id = kCodeClose;
  header.total_size = sizeof header;
  std::memcpy(close_record.data(), &header, sizeof header);
  write_records_locked(dump, close_record);
  ::munmap(dump.marker, dump.marker_size);
  ::close(dump.fd);
  dump.on.store(false);
  dump.fd = -1;
  dump.marker = nullptr;
  dump.path.clear();
}

void jitdump_added(std::span<const code_events::AddedCode> batch) {
  Jitdump& dump = jitdump();
  if (!dump.on.load(std::memory_order_relaxed)) return;
  try {
    std::vector<std::uint8_t> records;
    for (const auto& code : batch) append_load(records, code.address, code.name, code.bytes);
    std::lock_guard lock(dump.mutex);  // Held for the write only.
    if (dump.fd < 0) return;
    // A child of a raw clone() (no atfork handler ran) opens its own file here.
    if (dump.pid != detail::current_pid()) return static_cast<void>(open_locked(dump, dump.directory));
    write_records_locked(dump, records);
  } catch (const std::bad_alloc&) {
    // Best effort: the code stays unnamed in perf.
  }
}

void jitdump_released(std::span<const code_events::ReleasedCode>) {}  // The format has no unload record.

// A child of fork() writes its own file at once, starting with the code it inherited.
void reopen_in_child() {
  Jitdump& dump = jitdump();
  if (!dump.on.load()) return;
  try {
    std::lock_guard lock(dump.mutex);
    (void)open_locked(dump, dump.directory);
  } catch (const std::bad_alloc&) {
  }
}

// The exit handler is registered by the first enable (a program that never
// turns jitdump on runs nothing at exit).
bool g_exit_handler_registered = false;  // Under the dump's lock.

[[maybe_unused]] const bool g_jitdump_ready = [] {
  (void)jitdump();
  if (detail::env_flag("PUNCH_JITDUMP")) (void)enable_jitdump();
  return true;
}();

}  // namespace

const code_events::Sink code_events::kJitdumpSink{&jitdump_added, &jitdump_released};

Status enable_jitdump(const std::string& directory) {
  Jitdump& dump = jitdump();
  // From the first enable on, a fork child opens its own file (a program that
  // never turns jitdump on does nothing at fork). Lock-free: see docs/design.md.
  (void)run_in_fork_children(reopen_in_child);
  try {
    std::lock_guard lock(dump.mutex);
    // Under the dump's lock: no fork can start while atexit holds glibc's exit
    // lock (which a fork child would inherit taken: its exit() would hang).
    if (!g_exit_handler_registered) g_exit_handler_registered = std::atexit(disable_jitdump) == 0;
    if (dump.fd >= 0 && dump.pid == detail::current_pid()) return {};
    std::string dir = directory;
    if (dir.empty()) {
      const char* env = std::getenv("PUNCH_JITDUMP_DIR");
      dir = env && *env ? env : "/tmp";
    }
    return open_locked(dump, dir);
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kOutOfMemory, "enable_jitdump: out of memory");
  }
}

void disable_jitdump() {
  Jitdump& dump = jitdump();
  std::lock_guard lock(dump.mutex);
  close_locked(dump);
}

std::string jitdump_path() {
  Jitdump& dump = jitdump();
  std::lock_guard lock(dump.mutex);
  return dump.path;
}

std::size_t jitdump_loads() {
  Jitdump& dump = jitdump();
  std::lock_guard lock(dump.mutex);
  return dump.loads;
}

}  // namespace punch::runtime
