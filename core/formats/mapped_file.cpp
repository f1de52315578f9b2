#include "core/formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace llm {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '%s': %s", path.c_str(), std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot stat '%s': %s", path.c_str(), std::strerror(err));
  }
  // A directory opens fine with O_RDONLY but cannot be mapped; say so plainly.
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot map '%s': not a regular file", path.c_str());
  }
  size_ = static_cast<size_t>(st.st_size);
  // mmap rejects a zero length, and an empty file has nothing to map anyway.
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail("cannot map '%s': %s", path.c_str(), std::strerror(err));
    }
    data_ = p;
  }
  // The mapping keeps the file referenced; the descriptor is no longer needed.
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace llm
