// Shapes and tensor descriptions shared by the graph, the loaders and the backends.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"

namespace llm {

// Up to 4 dimensions, outermost first (row-major: the last dimension is contiguous).
struct Shape {
  int rank = 0;
  std::array<int64_t, 4> dims{};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);

  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const;
  // Elements in the last dimension (a "row"), and how many rows there are.
  int64_t row_len() const { return rank == 0 ? 1 : dims[rank - 1]; }
  int64_t rows() const { return rank == 0 ? 1 : numel() / dims[rank - 1]; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "[24, 256]"
};

// Bytes for a tensor of this shape and type (rows packed back to back).
size_t tensor_bytes(DType t, const Shape& s);

// A tensor living in host memory that someone else owns (an mmap, a vector).
struct HostTensor {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// A bound tensor as a raw pointer into a backend's memory (host or device), with its
// type and shape: what the CPU and CUDA backends' recorded steps hand their kernels.
struct TensorArg {
  uint8_t* ptr = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  const float* f32() const { return reinterpret_cast<const float*>(ptr); }
  float* f32_mut() const { return reinterpret_cast<float*>(ptr); }
  const int32_t* i32() const { return reinterpret_cast<const int32_t*>(ptr); }
  int32_t* i32_mut() const { return reinterpret_cast<int32_t*>(ptr); }
};

}  // namespace llm
