// /proc/self/maps: the whole list (parsed), or the one mapping holding an
// address (PROCMAP_QUERY ioctl, Linux 6.11+; a parse where the kernel lacks it).
#include <punch/runtime/maps.hpp>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "proc_self_fd.hpp"

namespace punch::runtime {
namespace {

// The PROCMAP_QUERY ABI, declared here because Debian 12's linux-libc-dev
// predates it. Mirrors struct procmap_query and its ioctl number in the
// kernel's include/uapi/linux/fs.h (Linux 6.11); the kernel accepts any
// `size` it knows, so this first version of the struct stays valid.
namespace procmap {
struct Query {
  std::uint64_t size;           // sizeof(Query)
  std::uint64_t query_flags;    // in
  std::uint64_t query_addr;     // in
  std::uint64_t vma_start;      // out
  std::uint64_t vma_end;        // out
  std::uint64_t vma_flags;      // out: kReadable | kWritable | kExecutable | kShared
  std::uint64_t vma_page_size;  // out
  std::uint64_t vma_offset;     // out
  std::uint64_t inode;          // out
  std::uint32_t dev_major;      // out
  std::uint32_t dev_minor;      // out
  std::uint32_t vma_name_size;  // in/out: buffer size, then name length + 1 (0: no name)
  std::uint32_t build_id_size;  // in/out
  std::uint64_t vma_name_addr;  // in
  std::uint64_t build_id_addr;  // in
};
static_assert(sizeof(Query) == 104);
constexpr std::uint64_t kReadable = 0x01, kWritable = 0x02, kExecutable = 0x04, kShared = 0x08;
constexpr unsigned long kIoctl = _IOWR('f', 17, Query);  // PROCMAP_QUERY
}  // namespace procmap

// Reads a whole /proc file (its size is unknown in advance).
Result<std::string> read_proc_file(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIoError, std::string(path) + ": cannot open: " + std::strerror(errno));
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail(ErrorCode::kIoError, std::string(path) + ": read failed: " + std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// Field readers for one line; each advances `p` and fails on malformed input.
bool read_hex(std::string_view& p, std::uint64_t& out) {
  std::size_t i = 0;
  out = 0;
  for (; i < p.size() && i < 16; ++i) {
    const char c = p[i];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) break;
    out = out << 4 | static_cast<std::uint64_t>(digit);
  }
  p.remove_prefix(i);
  return i > 0;
}

bool read_dec(std::string_view& p, std::uint64_t& out) {
  std::size_t i = 0;
  out = 0;
  for (; i < p.size() && i < 20 && p[i] >= '0' && p[i] <= '9'; ++i)
    out = out * 10 + static_cast<std::uint64_t>(p[i] - '0');
  p.remove_prefix(i);
  return i > 0;
}

bool skip(std::string_view& p, char c) {
  if (p.empty() || p.front() != c) return false;
  p.remove_prefix(1);
  return true;
}

// "start-end perms offset major:minor inode   path"
bool parse_line(std::string_view p, Mapping& m) {
  std::uint64_t start = 0, end = 0, offset = 0, major = 0, minor = 0, inode = 0;
  if (!read_hex(p, start) || !skip(p, '-') || !read_hex(p, end) || !skip(p, ' ') || p.size() < 5 || p[4] != ' ')
    return false;
  m.readable = p[0] == 'r';
  m.writable = p[1] == 'w';
  m.executable = p[2] == 'x';
  m.shared = p[3] == 's';
  p.remove_prefix(5);
  if (!read_hex(p, offset) || !skip(p, ' ') || !read_hex(p, major) || !skip(p, ':') || !read_hex(p, minor) ||
      !skip(p, ' ') || !read_dec(p, inode))
    return false;
  while (!p.empty() && p.front() == ' ') p.remove_prefix(1);
  m.start = start;
  m.end = end;
  m.offset = offset;
  m.device = major << 32 | minor;
  m.inode = inode;
  m.path.assign(p);
  return true;
}

Result<Mapping> query_by_parse(std::uintptr_t address) {
  auto text = read_proc_file("/proc/self/maps");
  if (!text) return tl::unexpected(std::move(text).error());
  std::string_view rest = *text;
  Mapping m;
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    if (parse_line(line, m) && m.contains(address)) return m;
  }
  return fail(ErrorCode::kNotMapped, address, "not mapped (no line of /proc/self/maps covers it)");
}

// The descriptor the ioctl goes to (reopened after fork: one inherited names
// the PARENT's address space).
constinit detail::ProcSelfFd g_maps{"/proc/self/maps", O_RDONLY};
std::atomic<int> g_ioctl_works{-1};  // -1 unknown, 0 no (ENOTTY/EINVAL), 1 yes.

Result<int> maps_fd() {
  const int fd = g_maps.get();
  if (fd < 0) return fail(ErrorCode::kIoError, std::string("/proc/self/maps: cannot open: ") + std::strerror(-fd));
  return fd;
}

// Ok(mapping), kNotMapped, kUnsupported (no ioctl here) or kIoError.
Result<Mapping> query_by_ioctl(std::uintptr_t address) {
  if (g_ioctl_works.load(std::memory_order_relaxed) == 0)
    return fail(ErrorCode::kUnsupported, "PROCMAP_QUERY is not available on this kernel");
  auto fd = maps_fd();
  if (!fd) return tl::unexpected(std::move(fd).error());
  char name[4096 + 64];  // PATH_MAX plus " (deleted)".
  procmap::Query q{};
  q.size = sizeof q;
  q.query_addr = address;
  q.vma_name_size = sizeof name;
  q.vma_name_addr = reinterpret_cast<std::uintptr_t>(name);
  int rc;
  do rc = ::ioctl(*fd, procmap::kIoctl, &q);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == ENOENT) return fail(ErrorCode::kNotMapped, address, "not mapped (no mapping covers it)");
    if (err == ENOTTY || err == EINVAL) {  // A kernel before 6.11 (or one that does not know this struct).
      g_ioctl_works.store(0, std::memory_order_relaxed);
      return fail(ErrorCode::kUnsupported, std::string("PROCMAP_QUERY on /proc/self/maps: ") + std::strerror(err));
    }
    return fail(ErrorCode::kIoError, address, std::string("PROCMAP_QUERY on /proc/self/maps: ") + std::strerror(err));
  }
  g_ioctl_works.store(1, std::memory_order_relaxed);
  Mapping m;
  m.start = q.vma_start;
  m.end = q.vma_end;
  m.readable = q.vma_flags & procmap::kReadable;
  m.writable = q.vma_flags & procmap::kWritable;
  m.executable = q.vma_flags & procmap::kExecutable;
  m.shared = q.vma_flags & procmap::kShared;
  m.offset = q.vma_offset;
  m.device = static_cast<std::uint64_t>(q.dev_major) << 32 | q.dev_minor;
  m.inode = q.inode;
  if (q.vma_name_size > 0) m.path.assign(name, q.vma_name_size - 1);  // The size counts the NUL.
  return m;
}

}  // namespace

std::vector<Mapping> parse_mappings(std::string_view text) {
  std::vector<Mapping> out;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    Mapping m;
    if (parse_line(text.substr(0, nl), m)) out.push_back(std::move(m));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  return out;
}

Result<std::vector<Mapping>> read_mappings() {
  auto text = read_proc_file("/proc/self/maps");
  if (!text) return tl::unexpected(std::move(text).error());
  return parse_mappings(*text);
}

Result<Mapping> query_mapping(std::uintptr_t address, MapsQuery how) {
  if (how == MapsQuery::kParse) return query_by_parse(address);
  auto found = query_by_ioctl(address);
  if (found || how == MapsQuery::kIoctl || found.error().code == ErrorCode::kNotMapped) return found;
  return query_by_parse(address);
}

std::optional<Mapping> find_mapping(std::uintptr_t address) {
  auto m = query_mapping(address);
  if (!m) return std::nullopt;
  return std::move(*m);
}

}  // namespace punch::runtime
