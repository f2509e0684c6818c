#include <punch/runtime/safe_read.hpp>

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "placement.hpp"
#include "proc_mem.hpp"

namespace punch::runtime {
namespace {

// process_vm_readv on ourselves, one page per iovec so a fault stops at the
// first unreadable page and still returns the readable prefix.
std::size_t read_vm(std::uintptr_t address, std::span<std::uint8_t> out) noexcept {
  const std::uintptr_t page = detail::page_size();
  std::size_t done = 0;
  while (done < out.size()) {
    constexpr int kMaxIov = 64;
    iovec remote[kMaxIov];
    int count = 0;
    std::size_t batch = 0;
    for (std::uintptr_t a = address + done; count < kMaxIov && done + batch < out.size(); ++count) {
      std::size_t len = std::min<std::size_t>(page - (a & (page - 1)), out.size() - done - batch);
      remote[count] = iovec{reinterpret_cast<void*>(a), len};
      a += len;
      batch += len;
    }
    iovec local{out.data() + done, batch};
    ssize_t n = ::process_vm_readv(::getpid(), &local, 1, remote, static_cast<unsigned long>(count), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
    if (static_cast<std::size_t>(n) < batch) break;
  }
  return done;
}

// pread on /proc/self/mem; false when the file cannot be used at all.
bool read_proc_mem(std::uintptr_t address, std::span<std::uint8_t> out, std::size_t& done) noexcept {
  const int fd = detail::proc_mem_fd_raw();
  if (fd < 0) return false;
  done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(address + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EIO or 0: the next byte is not readable.
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

Result<std::size_t> safe_read(std::uintptr_t address, std::span<std::uint8_t> out) {
  if (out.empty()) return std::size_t{0};
  if (out.size() > UINTPTR_MAX - address)
    return fail(ErrorCode::kInvalidArgument, address, "read of " + std::to_string(out.size()) + " bytes overflows");
  const std::size_t done = safe_read_some(address, out);
  if (done == 0) return fail(ErrorCode::kNotMapped, address, "not readable");
  return done;
}

std::size_t safe_read_some(std::uintptr_t address, std::span<std::uint8_t> out) noexcept {
  if (out.empty() || out.size() > UINTPTR_MAX - address) return 0;
  std::size_t done = 0;
  if (!read_proc_mem(address, out, done)) done = read_vm(address, out);
  return done;
}

Result<std::vector<std::uint8_t>> safe_read_exact(std::uintptr_t address, std::size_t size) {
  std::vector<std::uint8_t> bytes(size);
  auto n = safe_read(address, bytes);
  if (!n) return tl::unexpected(std::move(n).error());
  if (*n < size)
    return fail(ErrorCode::kNotMapped, address + *n,
                "not readable (reading " + std::to_string(size) + " bytes at " + at(address) + ")");
  return bytes;
}

}  // namespace punch::runtime
