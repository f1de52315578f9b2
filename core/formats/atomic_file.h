// Writing a file so that readers never see it half written: the content goes
// to PATH.tmpPID, which is renamed over PATH once complete. A symlink's target is
// written (the link stays); a FIFO or a device is written in place, not replaced.
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace llm {

// Calls write(stream) and renames the result into place; throws llm::Error
// naming the path when the file cannot be created, written or renamed.
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write);

}  // namespace llm
