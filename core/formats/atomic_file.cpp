#include "core/formats/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace llm {

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create '%s': %s", tmp.c_str(), std::strerror(errno));
    write(out);
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      fail("cannot write '%s'", path.c_str());
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail("cannot write '%s': %s", path.c_str(), std::strerror(err));
  }
}

}  // namespace llm
