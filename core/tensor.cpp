#include "core/tensor.h"

#include "core/error.h"

namespace llm {

Shape::Shape(std::initializer_list<int64_t> d) {
  if (d.size() > 4) fail("tensor rank %zu exceeds 4", d.size());
  for (int64_t v : d) dims[rank++] = v;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; i++)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank; i++) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

size_t tensor_bytes(DType t, const Shape& s) { return dtype_row_bytes(t, s.row_len()) * s.rows(); }

}  // namespace llm
