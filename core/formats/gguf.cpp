#include "core/formats/gguf.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "core/error.h"

namespace llm {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;
// Arrays of arrays are legal but nothing real nests deeply; the cap keeps a
// hostile file from recursing the stack away.
constexpr int kMaxArrayDepth = 16;
constexpr size_t kMaxAlignment = size_t{1} << 30;

const char* type_name(GgufType t) {
  switch (t) {
    case GgufType::U8:
      return "u8";
    case GgufType::I8:
      return "i8";
    case GgufType::U16:
      return "u16";
    case GgufType::I16:
      return "i16";
    case GgufType::U32:
      return "u32";
    case GgufType::I32:
      return "i32";
    case GgufType::F32:
      return "f32";
    case GgufType::BOOL:
      return "bool";
    case GgufType::STRING:
      return "string";
    case GgufType::ARRAY:
      return "array";
    case GgufType::U64:
      return "u64";
    case GgufType::I64:
      return "i64";
    case GgufType::F64:
      return "f64";
  }
  return "unknown";
}

bool is_int_type(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::BOOL:
      return true;
    default:
      return false;
  }
}

bool is_float_type(GgufType t) { return t == GgufType::F32 || t == GgufType::F64; }

// "string", "array of u32", "array of array" - for error messages.
std::string describe(const GgufValue& v) {
  if (v.type != GgufType::ARRAY) return type_name(v.type);
  return std::string("array of ") + type_name(v.array_type);
}

// Bytes an element of this type takes at least in the file (strings and arrays
// have a length/header prefix); bounds element counts before anything is reserved.
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    case GgufType::STRING:
      return 8;
    case GgufType::ARRAY:
      return 12;
  }
  return 1;
}

struct GgmlTypeSize {
  uint32_t type;
  const char* name;
  int64_t block_elems;
  uint64_t block_bytes;
};
// ggml's storage sizes (blocks of block_elems values in block_bytes bytes).
const GgmlTypeSize kGgmlTypes[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},      {27, "I64", 1, 8},      {28, "F64", 1, 8},      {30, "BF16", 1, 2},
};

const GgmlTypeSize* find_ggml_type(uint32_t t) {
  for (const GgmlTypeSize& s : kGgmlTypes)
    if (s.type == t) return &s;
  return nullptr;
}

// A cursor over the mapped bytes; every read is checked against the end so a
// truncated or lying file fails with a message instead of reading past the map.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("'%s' is truncated: %s needs %" PRIu64 " bytes at offset %" PRIu64
           " but the file has %" PRIu64,
           path_.c_str(), what, n, pos_, size_);
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // unaligned-safe; hosts are little-endian
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    need(n, what);  // bounds the allocation below by the file size
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

// The message names keys and tensors read from the broken file: control bytes (a NUL
// would cut the message short) are escaped, and a runaway name is cut at 200 bytes.
[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  std::string text;
  for (size_t i = 0; i < what.size(); i++) {
    if (text.size() >= 200 && what.size() - i > 40) {
      text += "...";
      i = what.size() - 40;
    }
    const unsigned char ch = static_cast<unsigned char>(what[i]);
    if (ch < 0x20 || ch == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", ch);
      text += esc;
    } else {
      text += what[i];
    }
  }
  fail("'%s' is corrupt: %s", path.c_str(), text.c_str());
}

GgufType check_type(uint32_t raw, const std::string& path, const std::string& key) {
  if (raw > static_cast<uint32_t>(GgufType::F64))
    corrupt(path, "key '" + key + "' has unknown value type " + std::to_string(raw));
  return static_cast<GgufType>(raw);
}

// Integers land in both i and u, so either reading is exact for values in its range.
template <typename T>
void read_int(Reader& r, GgufValue* v) {
  const T x = r.read<T>("an integer value");
  v->i = static_cast<int64_t>(x);
  v->u = static_cast<uint64_t>(x);
}

void read_value(Reader& r, GgufType type, GgufValue* v, int depth, const std::string& path,
                const std::string& key) {
  v->type = type;
  switch (type) {
    case GgufType::U8:
      return read_int<uint8_t>(r, v);
    case GgufType::I8:
      return read_int<int8_t>(r, v);
    case GgufType::U16:
      return read_int<uint16_t>(r, v);
    case GgufType::I16:
      return read_int<int16_t>(r, v);
    case GgufType::U32:
      return read_int<uint32_t>(r, v);
    case GgufType::I32:
      return read_int<int32_t>(r, v);
    case GgufType::U64:
      return read_int<uint64_t>(r, v);
    case GgufType::I64:
      return read_int<int64_t>(r, v);
    case GgufType::BOOL:
      v->i = r.read<uint8_t>("a bool value") != 0;
      v->u = static_cast<uint64_t>(v->i);
      break;
    case GgufType::F32:
      v->f = r.read<float>("an f32 value");
      break;
    case GgufType::F64:
      v->f = r.read<double>("an f64 value");
      break;
    case GgufType::STRING:
      v->str = r.read_string("a string value");
      break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        corrupt(path, "key '" + key + "' nests arrays more than " + std::to_string(kMaxArrayDepth) +
                          " deep");
      v->array_type = check_type(r.read<uint32_t>("an array header"), path, key);
      const uint64_t n = r.read<uint64_t>("an array header");
      // Every element takes some bytes, so a count the file cannot hold is caught
      // here, before the reservation.
      const uint64_t min_size = min_encoded_size(v->array_type);
      if (n > r.remaining() / min_size)
        fail("'%s' is truncated: array '%s' claims %" PRIu64
             " elements of type %s at offset %" PRIu64 " but only %" PRIu64 " bytes remain",
             path.c_str(), key.c_str(), n, type_name(v->array_type), r.pos(), r.remaining());
      v->array.resize(static_cast<size_t>(n));
      for (GgufValue& e : v->array) read_value(r, v->array_type, &e, depth + 1, path, key);
      break;
    }
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

bool GgufValue::is_int() const { return is_int_type(type); }

GgufFile::GgufFile(const std::string& path) : file_(path) {
  const char* p = path.c_str();
  const uint64_t size = file_.size();
  Reader r(file_.data(), size, path);

  // Compare what there is of the magic first: a 2-byte text file is "not a GGUF
  // file", while a 2-byte "GG" (or an empty file) is a truncated one.
  const size_t probe = size < 4 ? static_cast<size_t>(size) : 4;
  if (probe > 0 && std::memcmp(file_.data(), "GGUF", probe) != 0)
    fail("'%s' is not a GGUF file", p);
  if (r.read<uint32_t>("the magic") != kGgufMagic) fail("'%s' is not a GGUF file", p);
  version_ = r.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    // Big-endian files (a v3 option) read as a byte-swapped version here.
    if (version_ == 0x02000000u || version_ == 0x03000000u)
      fail("'%s': big-endian GGUF files are not supported", p);
    fail("'%s': unsupported GGUF version %" PRIu32 " (expected 2 or 3)", p, version_);
  }
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");

  // A key/value pair is at least a key length, a type and a 1-byte value.
  if (n_kv > r.remaining() / 13)
    fail("'%s' is truncated: %" PRIu64 " metadata entries cannot fit in %" PRIu64 " bytes", p, n_kv,
         r.remaining());
  for (uint64_t k = 0; k < n_kv; k++) {
    std::string key = r.read_string("a metadata key");
    const GgufType type = check_type(r.read<uint32_t>("a metadata value type"), path, key);
    if (metadata_.count(key) != 0) corrupt(path, "duplicate metadata key '" + key + "'");
    read_value(r, type, &metadata_[key], 0, path, key);
  }

  if (const GgufValue* a = find("general.alignment")) {
    // The spec says u32; any integer type is taken, but it must be a power of two.
    if (!a->is_int() || a->type == GgufType::BOOL)
      corrupt(path, "general.alignment has type " + describe(*a) + ", expected an integer");
    if (a->i <= 0 || uint64_t(a->i) > kMaxAlignment || (a->i & (a->i - 1)) != 0)
      corrupt(path, "general.alignment " + std::to_string(a->i) + " is not a power of two");
    alignment_ = static_cast<size_t>(a->i);
  }

  // name length + n_dims + type + offset: the least a tensor info can take.
  if (n_tensors > r.remaining() / 24)
    fail("'%s' is truncated: %" PRIu64 " tensor infos cannot fit in %" PRIu64 " bytes", p,
         n_tensors, r.remaining());
  tensors_.reserve(static_cast<size_t>(n_tensors));
  std::set<std::string> names;
  for (uint64_t t = 0; t < n_tensors; t++) {
    GgufTensorInfo info;
    info.name = r.read_string("a tensor name");
    const char* n = info.name.c_str();
    const uint32_t n_dims = r.read<uint32_t>("a tensor rank");
    if (n_dims > kMaxDims)
      corrupt(path, "tensor '" + info.name + "' has " + std::to_string(n_dims) +
                        " dimensions (at most 4)");
    uint64_t ne[kMaxDims] = {1, 1, 1, 1};
    for (uint32_t d = 0; d < n_dims; d++) ne[d] = r.read<uint64_t>("tensor dimensions");
    info.ggml_type = r.read<uint32_t>("a tensor type");
    info.offset = r.read<uint64_t>("a tensor offset");

    const GgmlTypeSize* ts = find_ggml_type(info.ggml_type);
    if (ts == nullptr)
      fail("'%s': tensor '%s' has unknown or unsupported ggml type %" PRIu32, p, n, info.ggml_type);
    // The dimensions come straight from the file: overflow-check the element
    // count (Shape keeps int64) and the byte size before trusting either.
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      // Each dim on its own too: a zero elsewhere would hide a huge one from the product.
      constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
      if (ne[d] > kMax || __builtin_mul_overflow(numel, ne[d], &numel) || numel > kMax)
        corrupt(path, "tensor '" + info.name + "' has absurd dimensions");
    }
    if (ne[0] % uint64_t(ts->block_elems) != 0)
      corrupt(path, "tensor '" + info.name + "' has rows of " + std::to_string(ne[0]) +
                        " elements, not a multiple of the " + ts->name + " block size " +
                        std::to_string(ts->block_elems));
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / uint64_t(ts->block_elems), ts->block_bytes, &nbytes))
      corrupt(path, "tensor '" + info.name + "' has absurd dimensions");
    // Checked here already so the size_t below cannot wrap; the exact placement
    // inside the data section is checked once the section start is known.
    if (nbytes > size)
      fail("'%s' is truncated: tensor '%s' needs %" PRIu64 " bytes but the file has %" PRIu64, p, n,
           nbytes, size);
    if (info.offset % alignment_ != 0)
      corrupt(path, "tensor '" + info.name + "' data offset " + std::to_string(info.offset) +
                        " is not a multiple of the alignment " + std::to_string(alignment_));
    info.nbytes = static_cast<size_t>(nbytes);
    // GGUF lists dimensions innermost first; Shape wants outermost first.
    info.shape.rank = static_cast<int>(n_dims);
    for (uint32_t d = 0; d < n_dims; d++) info.shape.dims[n_dims - 1 - d] = int64_t(ne[d]);
    if (!names.insert(info.name).second) corrupt(path, "duplicate tensor '" + info.name + "'");
    tensors_.push_back(std::move(info));
  }

  // Data starts at the next alignment boundary. Tensor-less files (vocab-only
  // GGUFs) may end right after the infos, so only tensors are checked against it.
  const uint64_t data_start = align_up(r.pos(), alignment_);
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  for (GgufTensorInfo& info : tensors_) {
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      fail("'%s' is truncated: tensor '%s' (%zu bytes at offset %" PRIu64
           " of the data section, which starts at %" PRIu64
           ") ends past the end of the file (%" PRIu64 " bytes)",
           p, info.name.c_str(), info.nbytes, info.offset, data_start, size);
    info.data = file_.data() + data_start + info.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

// The value under key, or an error naming the key (and the file) when absent.
const GgufValue& require(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) fail("GGUF key '%s' is missing in '%s'", key.c_str(), f.path().c_str());
  return *v;
}

[[noreturn]] void wrong_type(const GgufFile& f, const std::string& key, const GgufValue& v,
                             const char* expected) {
  fail("GGUF key '%s' has type %s, expected %s (in '%s')", key.c_str(), describe(v).c_str(),
       expected, f.path().c_str());
}

std::string as_string(const GgufFile& f, const std::string& key, const GgufValue& v) {
  if (v.type != GgufType::STRING) wrong_type(f, key, v, "a string");
  return v.str;
}

int64_t as_int(const GgufFile& f, const std::string& key, const GgufValue& v) {
  if (!v.is_int()) wrong_type(f, key, v, "an integer");
  if (v.type == GgufType::U64 && v.u > uint64_t(std::numeric_limits<int64_t>::max()))
    fail("GGUF key '%s' value %" PRIu64 " does not fit in int64 (in '%s')", key.c_str(), v.u,
         f.path().c_str());
  return v.i;
}

// Integer values are accepted where a float is asked for: the conversion is harmless
// and some writers store e.g. rope bases as integers.
double as_float(const GgufFile& f, const std::string& key, const GgufValue& v) {
  if (is_float_type(v.type)) return v.f;
  if (v.is_int() && v.type != GgufType::BOOL)
    return v.type == GgufType::U64 ? double(v.u) : double(v.i);
  wrong_type(f, key, v, "a float");
}

}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  return as_string(*this, key, require(*this, key));
}

int64_t GgufFile::get_int(const std::string& key) const {
  return as_int(*this, key, require(*this, key));
}

double GgufFile::get_float(const std::string& key) const {
  return as_float(*this, key, require(*this, key));
}

// The *_or accessors only default a missing key; a present key of the wrong type
// is still an error, since silently using the default would hide a broken file.
std::string GgufFile::get_string_or(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  return v == nullptr ? def : as_string(*this, key, *v);
}

int64_t GgufFile::get_int_or(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  return v == nullptr ? def : as_int(*this, key, *v);
}

double GgufFile::get_float_or(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  return v == nullptr ? def : as_float(*this, key, *v);
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || v.array_type != GgufType::STRING)
    wrong_type(*this, key, v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(e.str);
  return out;
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || !(is_float_type(v.array_type) ||
                                     (is_int_type(v.array_type) && v.array_type != GgufType::BOOL)))
    wrong_type(*this, key, v, "an array of numbers");
  std::vector<float> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(static_cast<float>(as_float(*this, key, e)));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufType::ARRAY || !is_int_type(v.array_type))
    wrong_type(*this, key, v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(as_int(*this, key, e));
  return out;
}

bool dtype_from_ggml_type(uint32_t ggml_type, DType* out) {
  switch (ggml_type) {
    case 0:
      *out = DType::F32;
      return true;
    case 1:
      *out = DType::F16;
      return true;
    case 2:
      *out = DType::Q4_0;
      return true;
    case 3:
      *out = DType::Q4_1;
      return true;
    case 8:
      *out = DType::Q8_0;
      return true;
    case 26:
      *out = DType::I32;
      return true;
    case 27:
      *out = DType::I64;
      return true;
    case 30:
      *out = DType::BF16;
      return true;
    default:
      return false;
  }
}

}  // namespace llm
