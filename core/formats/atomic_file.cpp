#include "core/formats/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace llm {

namespace fs = std::filesystem;

namespace {

// Writes into `path` itself: a FIFO, a device or another non-regular file, which a
// rename would replace with a regular file.
void write_in_place(const std::string& path, const std::function<void(std::ostream&)>& write) {
  std::ofstream out(path, std::ios::binary);
  if (!out) fail("cannot open '%s': %s", path.c_str(), std::strerror(errno));
  write(out);
  out.close();
  if (!out) fail("cannot write '%s': %s", path.c_str(), std::strerror(errno));
}

}  // namespace

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write) {
  std::error_code ec;
  // A symlink keeps pointing where it did: its target gets the new content.
  std::string target = path;
  if (fs::is_symlink(fs::symlink_status(path, ec))) {
    const fs::path resolved = fs::weakly_canonical(path, ec);
    if (ec) fail("cannot resolve the link '%s': %s", path.c_str(), ec.message().c_str());
    target = resolved.string();
  }
  const fs::file_status st = fs::status(target, ec);
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    if (fs::is_directory(st)) fail("cannot write '%s': it is a directory", path.c_str());
    write_in_place(target, write);
    return;
  }
  const std::string tmp = target + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create '%s': %s", tmp.c_str(), std::strerror(errno));
    errno = 0;
    write(out);
    out.close();
    if (!out) {
      const int err = errno;
      std::remove(tmp.c_str());
      fail("cannot write '%s'%s%s", path.c_str(), err ? ": " : "", err ? std::strerror(err) : "");
    }
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail("cannot write '%s': %s", path.c_str(), std::strerror(err));
  }
}

}  // namespace llm
