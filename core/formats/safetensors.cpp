#include "core/formats/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/formats/atomic_file.h"

namespace llm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char kMetadataKey[] = "__metadata__";
const char kIndexName[] = "model.safetensors.index.json";

// The safetensors dtype names we can represent; anything else (F8_*, U8, BOOL, ...) is rejected.
struct StName {
  const char* name;
  DType dtype;
};
const StName kStNames[] = {{"F32", DType::F32},
                           {"F16", DType::F16},
                           {"BF16", DType::BF16},
                           {"I32", DType::I32},
                           {"I64", DType::I64}};

bool st_dtype_from_name(const std::string& name, DType* out) {
  for (const StName& n : kStNames) {
    if (name == n.name) {
      *out = n.dtype;
      return true;
    }
  }
  return false;
}

const char* st_dtype_name(DType t) {
  for (const StName& n : kStNames)
    if (n.dtype == t) return n.name;
  return nullptr;
}

// Quantized tensors (Q8_0/Q4_0/Q4_1) are stored as U8 [rows, row_bytes] holding the GGUF
// blocks, with their dtype and logical shape in the header metadata, so that standard
// safetensors readers still accept the file.
const char kPackedDtypePrefix[] = "llmrt.dtype.";
const char kPackedShapePrefix[] = "llmrt.shape.";

bool is_packed(DType t) { return is_quant(t); }

// The largest power of two (at most 64) dividing n; 64 for 0.
size_t size_alignment(size_t n) {
  size_t a = 1;
  while (a < 64 && n % (a * 2) == 0) a *= 2;
  return a;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer; false for floats, negatives and other types.
bool json_to_u64(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '%s': %s", path.c_str(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("cannot read '%s'", path.c_str());
  return ss.str();
}

// The file's metadata names the block dtype and logical shape of a U8 [rows, row_bytes]
// tensor; checks that they agree with the stored bytes and applies them to *t.
void unpack_quantized(const char* p, const std::string& name, const std::string& block_dtype,
                      const std::map<std::string, std::string>& metadata, HostTensor* t) {
  const char* n = name.c_str();
  DType q;
  if (!dtype_from_name(block_dtype, &q) || !is_packed(q))
    fail("%s: tensor '%s' has unsupported packed dtype '%s'", p, n, block_dtype.c_str());
  const auto sh = metadata.find(kPackedShapePrefix + name);
  if (sh == metadata.end())
    fail("%s: tensor '%s' has no %s%s metadata", p, n, kPackedShapePrefix, n);
  Shape logical;
  json dims;
  try {
    dims = json::parse(sh->second);
  } catch (const json::parse_error&) {
  }
  bool ok = dims.is_array() && dims.size() >= 1 && dims.size() <= 4;
  uint64_t numel = 1;
  for (size_t i = 0; ok && i < dims.size(); i++) {
    uint64_t d;
    ok = json_to_u64(dims[i], &d) && !__builtin_mul_overflow(numel, d, &numel) &&
         numel <= (uint64_t(1) << 62);
    if (ok) logical.dims[logical.rank++] = static_cast<int64_t>(d);
  }
  if (!ok || logical.row_len() <= 0)  // rows() divides by the row length
    fail("%s: tensor '%s' has an invalid logical shape '%s'", p, n, sh->second.c_str());
  const int64_t row_len = logical.row_len();
  const DTypeInfo& info = dtype_info(q);
  if (row_len % info.block_elems != 0 || t->shape.rank != 2 || t->shape[0] != logical.rows() ||
      static_cast<uint64_t>(t->shape[1]) != row_len / info.block_elems * info.block_bytes)
    fail("%s: tensor '%s': stored U8 %s does not hold %s %s", p, n, t->shape.str().c_str(),
         info.name, logical.str().c_str());
  t->dtype = q;
  t->shape = logical;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const char* p = path.c_str();
  const uint64_t size = file_.size();
  if (size < 8)
    fail("'%s' is truncated: %llu bytes is too short for a safetensors header", p,
         (unsigned long long)size);
  const uint64_t header_len = read_u64_le(file_.data());
  if (header_len > size - 8)
    fail("'%s' is truncated: the header needs %llu bytes but the file has %llu", p,
         (unsigned long long)(header_len + 8), (unsigned long long)size);

  json header;
  try {
    const char* text = reinterpret_cast<const char*>(file_.data() + 8);
    header = json::parse(text, text + header_len);
  } catch (const json::parse_error& e) {
    fail("%s: invalid safetensors header JSON: %s", p, e.what());
  }
  if (!header.is_object()) fail("%s: safetensors header is not a JSON object", p);

  const uint8_t* data = file_.data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  // Metadata first: it says how to read packed quantized tensors.
  if (const auto meta = header.find(kMetadataKey); meta != header.end() && !meta->is_null()) {
    if (!meta->is_object()) fail("%s: __metadata__ is not a JSON object", p);
    // The format says string values; keep other values as JSON text rather than
    // refusing weights over informational fields.
    for (const auto& m : meta->items())
      metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
  }
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const json& v = item.value();
    const char* n = name.c_str();
    if (name == kMetadataKey) continue;
    if (!v.is_object()) fail("%s: entry for tensor '%s' is not a JSON object", p, n);

    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail("%s: tensor '%s' has no string 'dtype'", p, n);
    HostTensor t;
    const std::string dtype_str = dt->get<std::string>();
    const auto packed_dtype = metadata_.find(kPackedDtypePrefix + name);
    const bool packed = dtype_str == "U8" && packed_dtype != metadata_.end();
    if (packed) {
      t.dtype = DType::I32;  // placeholder: counted in bytes below, replaced once checked
    } else if (!st_dtype_from_name(dtype_str, &t.dtype)) {
      fail("%s: tensor '%s' has unsupported dtype %s", p, n, dtype_str.c_str());
    }

    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail("%s: tensor '%s' has no 'shape' array", p, n);
    if (sh->size() > 4)
      fail("%s: tensor '%s' has rank %zu (at most 4 is supported)", p, n, sh->size());
    // numel is computed with an overflow guard: a hostile shape must not wrap around
    // to a size that happens to match the byte range.
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      uint64_t dim;
      if (!json_to_u64(d, &dim) || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("%s: tensor '%s' has an invalid shape %s", p, n, sh->dump().c_str());
      t.shape.dims[t.shape.rank++] = static_cast<int64_t>(dim);
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      numel *= dim;
    }
    const uint64_t elem = packed ? 1 : dtype_info(t.dtype).block_bytes;
    if (numel > std::numeric_limits<uint64_t>::max() / elem) overflow = true;
    if (overflow) fail("%s: tensor '%s' shape %s is too large", p, n, t.shape.str().c_str());

    const auto off = v.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == v.end() || !off->is_array() || off->size() != 2 || !json_to_u64((*off)[0], &begin) ||
        !json_to_u64((*off)[1], &end) || begin > end)
      fail("%s: tensor '%s' has invalid data_offsets", p, n);
    if (end > data_size)
      fail("'%s' is truncated: tensor '%s' needs bytes up to %llu but the file has %llu", p, n,
           (unsigned long long)(8 + header_len + end), (unsigned long long)size);
    if (end - begin != numel * elem)
      fail("%s: tensor '%s' has %llu bytes but %s %s needs %llu", p, n,
           (unsigned long long)(end - begin), dtype_str.c_str(), t.shape.str().c_str(),
           (unsigned long long)(numel * elem));
    t.data = data + begin;
    t.nbytes = static_cast<size_t>(end - begin);
    if (packed) unpack_quantized(p, name, packed_dtype->second, metadata_, &t);
    tensors_[name] = t;
  }
}

std::unique_ptr<WeightStore> WeightStore::open_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) fail("weights directory '%s' does not exist", dir.c_str());
  if (!fs::is_directory(dir, ec)) fail("'%s' is not a directory", dir.c_str());

  auto store = std::make_unique<WeightStore>();
  const fs::path index_path = fs::path(dir) / kIndexName;
  if (fs::exists(index_path, ec)) {
    const std::string ip = index_path.string();
    json index;
    try {
      index = json::parse(read_text_file(ip));
    } catch (const json::parse_error& e) {
      fail("%s: invalid JSON: %s", ip.c_str(), e.what());
    }
    const auto wm = index.is_object() ? index.find("weight_map") : index.end();
    if (wm == index.end() || !wm->is_object()) fail("%s: missing 'weight_map' object", ip.c_str());

    // Each shard is opened once, in name order, however many tensors it holds.
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& e : wm->items()) {
      if (!e.value().is_string())
        fail("%s: weight_map entry '%s' is not a file name", ip.c_str(), e.key().c_str());
      by_file[e.value().get<std::string>()].push_back(e.key());
    }
    if (by_file.empty()) fail("%s: weight_map is empty", ip.c_str());
    for (const auto& [file, names] : by_file) {
      const fs::path shard = fs::path(dir) / file;
      if (!fs::exists(shard, ec))
        fail("%s: shard '%s' is missing (looked for '%s')", ip.c_str(), file.c_str(),
             shard.string().c_str());
      auto f = std::make_unique<SafetensorsFile>(shard.string());
      // Only tensors the index lists are exposed; a shard may carry extras.
      for (const std::string& name : names) {
        const auto it = f->tensors().find(name);
        if (it == f->tensors().end())
          fail("%s: tensor '%s' is listed in shard '%s' but that file does not contain it",
               ip.c_str(), name.c_str(), file.c_str());
        store->tensors_[name] = it->second;
      }
      store->files_.push_back(std::move(f));
    }
    return store;
  }

  // model.safetensors alone when present (a folder may hold other safetensors
  // files, such as test references); else every *.safetensors file.
  std::vector<std::string> paths;
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single, ec)) {
    paths.push_back(single.string());
  } else {
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (e.is_regular_file(ec) && e.path().extension() == ".safetensors")
        paths.push_back(e.path().string());
    }
  }
  if (ec) fail("cannot list '%s': %s", dir.c_str(), ec.message().c_str());
  if (paths.empty()) fail("no .safetensors weights in '%s'", dir.c_str());
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) store->add_file(std::make_unique<SafetensorsFile>(path));
  return store;
}

void WeightStore::add_file(std::unique_ptr<SafetensorsFile> f) {
  // Check everything before inserting so a failure leaves no pointers into f behind.
  for (const auto& kv : f->tensors()) {
    if (tensors_.count(kv.first) == 0) continue;
    std::string where = "an added tensor";
    for (const auto& other : files_) {
      if (other->tensors().count(kv.first)) {
        where = "'" + other->path() + "'";
        break;
      }
    }
    fail("duplicate tensor '%s' in '%s' (already in %s)", kv.first.c_str(), f->path().c_str(),
         where.c_str());
  }
  for (const auto& kv : f->tensors()) tensors_[kv.first] = kv.second;
  files_.push_back(std::move(f));
}

const HostTensor* WeightStore::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

void WeightStore::add_external(const std::string& name, const HostTensor& t,
                               std::shared_ptr<const void> keep_alive) {
  if (tensors_.count(name)) fail("duplicate tensor '%s'", name.c_str());
  tensors_[name] = t;
  external_.push_back(std::move(keep_alive));
}

void WeightStore::release_owned(const std::string& name) {
  auto it = tensors_.find(name);
  if (it == tensors_.end() || it->second.data == nullptr) return;
  for (std::unique_ptr<std::vector<uint8_t>>& o : owned_) {
    if (o && o->data() == it->second.data) {
      o.reset();
      it->second.data = nullptr;
      return;
    }
  }
}

void WeightStore::add_owned(const std::string& name, DType dtype, Shape shape,
                            std::vector<uint8_t> data) {
  const size_t need = tensor_bytes(dtype, shape);
  if (data.size() != need)
    fail("tensor '%s': %zu bytes given but %s %s needs %zu", name.c_str(), data.size(),
         dtype_name(dtype), shape.str().c_str(), need);
  // The vector lives behind a unique_ptr so its buffer never moves. An existing entry of
  // the same name is replaced: this is how converted copies supersede mapped originals.
  owned_.push_back(std::make_unique<std::vector<uint8_t>>(std::move(data)));
  HostTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data = owned_.back()->data();
  t.nbytes = need;
  tensors_[name] = t;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, HostTensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey)
      fail("%s: '%s' is not a valid tensor name", path.c_str(), kMetadataKey);
    if (!seen.insert(name).second) fail("%s: duplicate tensor '%s'", path.c_str(), name.c_str());
    if (st_dtype_name(t.dtype) == nullptr && !is_packed(t.dtype))
      fail("%s: tensor '%s' has dtype %s, which safetensors cannot store", path.c_str(),
           name.c_str(), dtype_name(t.dtype));
    if (is_packed(t.dtype) && t.shape.rank == 0)
      fail("%s: tensor '%s' is a %s scalar", path.c_str(), name.c_str(), dtype_name(t.dtype));
    const size_t need = tensor_bytes(t.dtype, t.shape);
    if (t.nbytes != need || (need > 0 && t.data == nullptr))
      fail("%s: tensor '%s' has %zu bytes but %s %s needs %zu", path.c_str(), name.c_str(),
           t.nbytes, dtype_name(t.dtype), t.shape.str().c_str(), need);
  }

  // Data goes out by decreasing power-of-two alignment of each tensor's size (then by
  // name): with a 64-aligned data start every tensor then starts at a multiple of its
  // element size, mostly of 16 or more (aligned loads from the mapping), with no holes
  // between tensors (the format forbids them).
  std::vector<const std::pair<std::string, HostTensor>*> order;
  for (const auto& e : tensors) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const size_t ea = size_alignment(a->second.nbytes), eb = size_alignment(b->second.nbytes);
    return ea != eb ? ea > eb : a->first < b->first;
  });

  json header = json::object();  // std::map-backed: keys are written sorted
  std::map<std::string, std::string> meta = metadata;
  uint64_t offset = 0;
  for (const auto* e : order) {
    const HostTensor& t = e->second;
    json shape = json::array();
    const char* dtype = st_dtype_name(t.dtype);
    if (is_packed(t.dtype)) {
      // Blocks as U8 rows; the metadata says how to read them back.
      dtype = "U8";
      shape = {t.shape.rows(), dtype_row_bytes(t.dtype, t.shape.row_len())};
      json logical = json::array();
      for (int i = 0; i < t.shape.rank; i++) logical.push_back(t.shape.dims[i]);
      meta[kPackedDtypePrefix + e->first] = dtype_name(t.dtype);
      meta[kPackedShapePrefix + e->first] = logical.dump();
    } else {
      for (int i = 0; i < t.shape.rank; i++) shape.push_back(t.shape.dims[i]);
    }
    header[e->first] = {
        {"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  if (!meta.empty()) header[kMetadataKey] = meta;
  std::string text = header.dump();
  text.append((64 - (8 + text.size()) % 64) % 64, ' ');

  write_file_atomic(path, [&](std::ostream& out) {
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; i++, n >>= 8) len[i] = static_cast<uint8_t>(n & 0xff);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto* e : order) {
      if (e->second.nbytes > 0)
        out.write(static_cast<const char*>(e->second.data),
                  static_cast<std::streamsize>(e->second.nbytes));
    }
  });
}

}  // namespace llm
