#include <punch/runtime/maps.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace punch::runtime {
namespace {

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

bool parse_line(const std::string& line, Mapping& m) {
  unsigned long long start = 0, end = 0, offset = 0, inode = 0;
  unsigned int major = 0, minor = 0;
  char perms[5] = {};
  int path_at = 0;
  if (std::sscanf(line.c_str(), "%llx-%llx %4s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major,
                  &minor, &inode, &path_at) < 7)
    return false;
  m.start = start;
  m.end = end;
  m.readable = perms[0] == 'r';
  m.writable = perms[1] == 'w';
  m.executable = perms[2] == 'x';
  m.shared = perms[3] == 's';
  m.offset = offset;
  m.device = (static_cast<std::uint64_t>(major) << 32) | minor;
  m.inode = inode;
  m.path = path_at > 0 && static_cast<std::size_t>(path_at) <= line.size() ? line.substr(static_cast<std::size_t>(path_at)) : "";
  return true;
}

}  // namespace

Result<std::vector<Mapping>> read_mappings() {
  auto text = read_proc_file("/proc/self/maps");
  if (!text) return tl::unexpected(std::move(text).error());
  std::vector<Mapping> out;
  std::size_t pos = 0;
  while (pos < text->size()) {
    std::size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    Mapping m;
    if (parse_line(text->substr(pos, nl - pos), m)) out.push_back(std::move(m));
    pos = nl + 1;
  }
  return out;
}

std::optional<Mapping> find_mapping(std::uintptr_t address) {
  auto maps = read_mappings();
  if (!maps) return std::nullopt;
  for (Mapping& m : *maps)
    if (m.contains(address)) return std::move(m);
  return std::nullopt;
}

}  // namespace punch::runtime
