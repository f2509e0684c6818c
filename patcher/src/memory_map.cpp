// Parses /proc/self/maps. Read with one open and a few reads: the file is a
// snapshot per read(2) call, so we read it whole before parsing.
#include "memory_map.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace punch::patcher::live {
namespace {

Result<std::string> read_whole(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIoError, std::string(path) + ": " + std::strerror(errno));
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return fail(ErrorCode::kIoError, std::string(path) + ": " + std::strerror(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace

Result<MemoryMap> MemoryMap::read() {
  auto text = read_whole("/proc/self/maps");
  if (!text) return tl::unexpected(std::move(text).error());
  MemoryMap map;
  std::size_t pos = 0;
  while (pos < text->size()) {
    std::size_t eol = text->find('\n', pos);
    if (eol == std::string::npos) eol = text->size();
    std::string line = text->substr(pos, eol - pos);
    pos = eol + 1;
    unsigned long long start = 0, end = 0;
    char perms[8] = {};
    int name_at = 0;
    // "start-end perms offset dev inode name"
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %*s %n", &start, &end, perms, &name_at) < 3) continue;
    Mapping m;
    m.start = static_cast<std::uintptr_t>(start);
    m.end = static_cast<std::uintptr_t>(end);
    m.readable = perms[0] == 'r';
    m.executable = perms[2] == 'x';
    m.shared = perms[3] == 's';
    if (name_at > 0 && static_cast<std::size_t>(name_at) < line.size()) m.name = line.substr(static_cast<std::size_t>(name_at));
    map.mappings_.push_back(std::move(m));
  }
  std::sort(map.mappings_.begin(), map.mappings_.end(),
            [](const Mapping& a, const Mapping& b) { return a.start < b.start; });
  return map;
}

Result<std::vector<const Mapping*>> MemoryMap::covering(std::uintptr_t address, std::size_t size) const {
  std::vector<const Mapping*> out;
  std::uintptr_t next = address;
  const std::uintptr_t end = address + size;
  auto it = std::upper_bound(mappings_.begin(), mappings_.end(), next,
                             [](std::uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it != mappings_.begin()) --it;
  while (next < end) {
    if (it == mappings_.end() || it->start > next || it->end <= next)
      return fail(ErrorCode::kNotMapped, at(next) + ": not mapped (no line of /proc/self/maps covers it)");
    out.push_back(&*it);
    next = it->end;
    ++it;
  }
  return out;
}

}  // namespace punch::patcher::live
