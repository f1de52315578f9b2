#include "core/backend.h"

#include <vector>

namespace llm {

std::unique_ptr<DeviceBuffer> Backend::from_host(const void* data, size_t bytes,
                                                 const std::string& what) {
  auto buf = alloc(bytes, what);
  upload(*buf, 0, data, bytes);
  return buf;
}

void Backend::clear(DeviceBuffer& dst, size_t offset, size_t bytes) {
  const std::vector<uint8_t> zeros(bytes, 0);
  upload(dst, offset, zeros.data(), bytes);
}

}  // namespace llm
