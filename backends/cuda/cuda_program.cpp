// CudaProgram: see cuda_program.h.
#include "backends/cuda/cuda_program.h"

#include <algorithm>

#include "backends/cuda/kernel_timeline.h"
#include "core/error.h"
#include "core/trace.h"

namespace llm {
namespace cuda {

namespace {

class CudaProgram final : public Program {
 public:
  // labels[i] names launch i in the LLM_CUDA_PROFILE=1 breakdown.
  CudaProgram(std::shared_ptr<Context> ctx, std::vector<Launch> launches,
              std::vector<std::string> labels, std::vector<Dispatch> dispatches,
              std::vector<std::shared_ptr<CudaBuffer>> keep)
      : ctx_(std::move(ctx)),
        launches_(std::move(launches)),
        labels_(std::move(labels)),
        dispatches_(std::move(dispatches)),
        keep_(std::move(keep)) {}
  ~CudaProgram() override {
    // A replay may still be reading the scratch this program owns.
    if (cudaSetDevice(ctx_->device) == cudaSuccess) cudaStreamSynchronize(ctx_->stream.get());
    if (profile_runs_ > 0) print_profile();
  }
  CudaProgram(const CudaProgram&) = delete;
  CudaProgram& operator=(const CudaProgram&) = delete;

  void run() override {
    use_device(ctx_->device);
    const cudaStream_t s = ctx_->ordered();
    if (ctx_->profile) {
      const std::vector<double> ms = time_launches(s);
      for (size_t i = 0; i < ms.size(); i++) totals_[i] += ms[i];
      profile_runs_++;
      return;
    }
    if (!ctx_->graphs) {
      for (const Launch& l : launches_) l(s);
      return;
    }
    if (!exec_.ready()) capture(s);
    exec_.launch(s);
  }

  std::vector<Dispatch> dispatches() const override { return dispatches_; }

  std::string profile_method() const override {
    return ctx_->graphs && KernelTimeline::get()
               ? "CUPTI: kernels of one CUDA graph replay, each charged from the previous "
                 "kernel's end to its own"
               : "CUDA events around each launch, no graph (no CUPTI: launch gaps included)";
  }

  // The graph replayed once with CUPTI recording its kernels, each launch charged
  // with its kernels' shares of the step's timeline (kernel_timeline.h). Without
  // CUPTI, or with graphs off: launches timed one by one between events.
  std::vector<double> run_profiled() override {
    use_device(ctx_->device);
    const cudaStream_t s = ctx_->ordered();
    KernelTimeline* timeline = ctx_->graphs ? KernelTimeline::get() : nullptr;
    if (!timeline) return time_launches(s);
    if (kernels_per_launch_.empty()) kernels_per_launch_ = count_kernels(s);
    if (!exec_.ready()) capture(s);
    LLM_CUDA_CHECK(cudaStreamSynchronize(s));
    timeline->begin();
    exec_.launch(s);
    LLM_CUDA_CHECK(cudaStreamSynchronize(s));
    const std::vector<KernelSpan> spans = timeline->end();
    size_t expected = 0;
    for (int n : kernels_per_launch_) expected += static_cast<size_t>(n);
    if (spans.size() != expected)
      fail("cuda profile: CUPTI saw %zu kernels in a step of %zu", spans.size(), expected);
    const std::vector<double> share = exclusive_ms(spans);
    std::vector<double> out(launches_.size(), 0.0);
    size_t k = 0;
    for (size_t i = 0; i < launches_.size(); i++)
      for (int j = 0; j < kernels_per_launch_[i]; j++) out[i] += share[k++];
    return out;
  }

 private:
  // Kernel nodes each launch adds to a graph: captured into a throwaway graph (nothing
  // runs), counting after every launch.
  std::vector<int> count_kernels(cudaStream_t s) {
    std::vector<int> counts;
    LLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t g = nullptr;
    try {
      size_t seen = 0;
      for (const Launch& l : launches_) {
        l(s);
        cudaStreamCaptureStatus status;
        cudaGraph_t building = nullptr;
        LLM_CUDA_CHECK(cudaStreamGetCaptureInfo(s, &status, nullptr, &building));
        size_t n = 0;
        LLM_CUDA_CHECK(cudaGraphGetNodes(building, nullptr, &n));
        std::vector<cudaGraphNode_t> nodes(n);
        if (n) LLM_CUDA_CHECK(cudaGraphGetNodes(building, nodes.data(), &n));
        size_t kernels = 0;
        for (cudaGraphNode_t node : nodes) {
          cudaGraphNodeType type;
          LLM_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
          kernels += type == cudaGraphNodeTypeKernel;
        }
        counts.push_back(static_cast<int>(kernels - seen));
        seen = kernels;
      }
    } catch (...) {
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    LLM_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphDestroy(g);
    return counts;
  }

  // Direct launches (not the graph) with an event between each pair: the GPU time of
  // each launch in ms. Waits for the stream.
  std::vector<double> time_launches(cudaStream_t s) {
    if (events_.empty()) {
      for (size_t i = 0; i <= launches_.size(); i++) events_.push_back(std::make_unique<Event>());
      totals_.assign(launches_.size(), 0.0);
    }
    // A spinning kernel first holds the stream while the host enqueues everything, so
    // the events time the launches back to back rather than the host's pace.
    spin(s, std::min<double>(100e3, 25.0 * static_cast<double>(launches_.size())));
    for (size_t i = 0; i < launches_.size(); i++) {
      LLM_CUDA_CHECK(cudaEventRecord(events_[i]->get(), s));
      launches_[i](s);
    }
    LLM_CUDA_CHECK(cudaEventRecord(events_.back()->get(), s));
    LLM_CUDA_CHECK(cudaEventSynchronize(events_.back()->get()));
    std::vector<double> out(launches_.size());
    for (size_t i = 0; i < launches_.size(); i++) {
      float ms = 0.f;
      LLM_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i]->get(), events_[i + 1]->get()));
      out[i] = ms;
    }
    return out;
  }

  void print_profile() const {
    print_label_profile("cuda:" + std::to_string(ctx_->device), "launches", launches_.size(),
                        labels_, totals_, profile_runs_);
  }

  void capture(cudaStream_t s) {
    // Thread-local mode: other threads' CUDA calls do not break the capture.
    LLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      for (const Launch& l : launches_) l(s);
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(s, &g);  // leave capture mode before reporting
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t g = nullptr;
    LLM_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    exec_.instantiate(g);
  }

  std::shared_ptr<Context> ctx_;
  std::vector<Launch> launches_;
  std::vector<std::string> labels_;
  std::vector<Dispatch> dispatches_;
  std::vector<std::shared_ptr<CudaBuffer>> keep_;  // scratch the launches point into
  GraphExec exec_;
  std::vector<std::unique_ptr<Event>> events_;  // profiled runs only
  std::vector<double> totals_;
  int profile_runs_ = 0;
  std::vector<int> kernels_per_launch_;  // CUPTI profiles only
};

}  // namespace

std::unique_ptr<Program> make_program(std::shared_ptr<Context> ctx, std::vector<Launch> launches,
                                      std::vector<std::string> labels,
                                      std::vector<Program::Dispatch> dispatches,
                                      std::vector<std::shared_ptr<CudaBuffer>> keep) {
  return std::make_unique<CudaProgram>(std::move(ctx), std::move(launches), std::move(labels),
                                       std::move(dispatches), std::move(keep));
}

}  // namespace cuda
}  // namespace llm
