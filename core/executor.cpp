#include "core/executor.h"

#include <cstring>

#include "core/error.h"

namespace llm {

namespace {
constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Executor::Executor(Backend& backend, Graph graph, const TensorResolver& weights,
                   const TensorResolver& states)
    : backend_(backend), graph_(std::move(graph)) {
  const auto& tensors = graph_.tensors();
  // Every node must be implemented by this backend before anything is allocated.
  for (const Node& n : graph_.nodes()) {
    std::vector<const TensorInfo*> ins;
    for (TensorId id : n.inputs) ins.push_back(&tensors[id]);
    const std::string why = backend_.check(n, ins, tensors[n.output]);
    if (!why.empty())
      fail("device %s cannot run node '%s' (%s): %s", backend_.info().id.c_str(), n.name.c_str(),
           op_name(n.op), why.c_str());
  }

  plan_ = plan_memory(graph_, kAlign);
  refs_.resize(tensors.size());
  if (plan_.arena_bytes > 0) arena_ = backend_.alloc(plan_.arena_bytes, "intermediate tensors");

  size_t input_bytes = 0, constant_bytes = 0;
  for (const TensorInfo& t : tensors) {
    if (t.kind == TensorKind::Input) input_bytes += align_up(tensor_bytes(t.dtype, t.shape));
    if (t.kind == TensorKind::Constant) constant_bytes += align_up(t.constant.size());
  }
  if (input_bytes) inputs_ = backend_.alloc(input_bytes, "step inputs");
  if (constant_bytes) constants_ = backend_.alloc(constant_bytes, "graph constants");

  input_host_.assign(input_bytes, 0);
  input_slot_of_.assign(tensors.size(), -1);
  size_t input_off = 0, constant_off = 0;
  for (TensorId id = 0; id < static_cast<TensorId>(tensors.size()); id++) {
    const TensorInfo& t = tensors[id];
    TensorRef& r = refs_[id];
    switch (t.kind) {
      case TensorKind::Weight:
        r = weights(t);
        break;
      case TensorKind::State:
        r = states(t);
        break;
      case TensorKind::Input:
        r = {inputs_.get(), input_off, t.dtype, t.shape};
        input_slot_of_[id] = static_cast<int>(input_slots_.size());
        input_slots_.push_back({input_off, tensor_bytes(t.dtype, t.shape)});
        input_off += align_up(tensor_bytes(t.dtype, t.shape));
        break;
      case TensorKind::Constant:
        r = {constants_.get(), constant_off, t.dtype, t.shape};
        backend_.upload(*constants_, constant_off, t.constant.data(), t.constant.size());
        constant_off += align_up(t.constant.size());
        break;
      case TensorKind::Intermediate:
      case TensorKind::Output:
        if (plan_.offset[id] != MemoryPlan::kNotPlanned)
          r = {arena_.get(), plan_.offset[id], t.dtype, t.shape};
        break;
    }
    if ((t.kind == TensorKind::Weight || t.kind == TensorKind::State) &&
        (r.dtype != t.dtype || r.shape != t.shape))
      fail("tensor '%s' bound as %s %s, graph expects %s %s", t.name.c_str(), dtype_name(r.dtype),
           r.shape.str().c_str(), dtype_name(t.dtype), t.shape.str().c_str());
  }

  bound_.reserve(graph_.nodes().size());
  for (const Node& n : graph_.nodes()) {
    BoundNode b;
    b.node = &n;
    for (TensorId id : n.inputs) b.inputs.push_back(refs_[id]);
    b.output = refs_[n.output];
    bound_.push_back(std::move(b));
  }
  program_ = backend_.compile(bound_);
}

TensorId Executor::find_kind(const std::string& name, TensorKind kind, const char* what) const {
  const TensorId id = graph_.find(name);
  if (id < 0 || graph_.tensor(id).kind != kind)
    fail("graph has no %s named '%s'", what, name.c_str());
  return id;
}

void Executor::set_input(const std::string& name, const void* data, size_t bytes) {
  const TensorId id = find_kind(name, TensorKind::Input, "input");
  const TensorRef& r = refs_[id];
  const size_t expected = tensor_bytes(r.dtype, r.shape);
  if (bytes != expected) fail("input '%s' takes %zu bytes, got %zu", name.c_str(), expected, bytes);
  InputSlot& slot = input_slots_[input_slot_of_[id]];
  uint8_t* host = input_host_.data() + slot.offset;
  if (!slot.fed && !slot.dirty && std::memcmp(host, data, bytes) == 0) return;
  std::memcpy(host, data, bytes);
  slot.dirty = true;
  slot.fed = false;
}

void Executor::feed_input(const std::string& name, const Executor& src, const std::string& output) {
  const TensorId id = find_kind(name, TensorKind::Input, "input");
  const TensorRef& from = src.refs_[src.find_kind(output, TensorKind::Output, "output")];
  const size_t bytes = tensor_bytes(refs_[id].dtype, refs_[id].shape);
  if (tensor_bytes(from.dtype, from.shape) != bytes)
    fail("input '%s' takes %zu bytes, output '%s' has %zu", name.c_str(), bytes, output.c_str(),
         tensor_bytes(from.dtype, from.shape));
  InputSlot& slot = input_slots_[input_slot_of_[id]];
  backend_.copy(*inputs_, slot.offset, *from.buffer, from.offset, bytes);
  slot.dirty = false;
  slot.fed = true;
}

void Executor::flush_inputs() {
  // Dirty slots go up together with the clean ones between them (their host copy is
  // what the device holds); a fed slot ends a run.
  size_t begin = 0, end = 0;
  bool open = false;
  auto upload = [&] {
    if (open) backend_.upload(*inputs_, begin, input_host_.data() + begin, end - begin);
    open = false;
  };
  for (InputSlot& slot : input_slots_) {
    if (slot.fed) {
      upload();
    } else if (slot.dirty) {
      if (!open) begin = slot.offset;
      open = true;
      end = slot.offset + slot.bytes;
      slot.dirty = false;
    }
  }
  upload();
}

void Executor::run() {
  flush_inputs();
  program_->run();
}

std::vector<double> Executor::run_profiled() {
  flush_inputs();
  return program_->run_profiled();
}

const TensorRef& Executor::output_ref(const std::string& name, size_t bytes) const {
  const TensorRef& r = refs_[find_kind(name, TensorKind::Output, "output")];
  const size_t expected = tensor_bytes(r.dtype, r.shape);
  if (bytes > expected)
    fail("output '%s' has %zu bytes, asked for %zu", name.c_str(), expected, bytes);
  return r;
}

void Executor::read_output(const std::string& name, void* dst, size_t bytes) const {
  const TensorRef& r = output_ref(name, bytes);
  backend_.download(*r.buffer, r.offset, dst, bytes);
}

uint64_t Executor::start_read_output(const std::string& name, void* dst, size_t bytes) const {
  const TensorRef& r = output_ref(name, bytes);
  return backend_.start_download(*r.buffer, r.offset, dst, bytes);
}

}  // namespace llm
