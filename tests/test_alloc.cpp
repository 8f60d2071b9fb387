// The training loop allocates nothing once it is running: every buffer a step
// needs (activations, gradients, the batch, the kernels' scratch, the fused
// ReLU's mask) is sized on the first batches and reused. Counted by replacing
// the global operator new for this test binary, between two progress reports
// of Trainer::fit, when only training steps run.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "bnorm/io/dataset.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/tensor.hpp"
#include "bnorm/train/optimizer.hpp"
#include "bnorm/train/trainer.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace bnorm {
namespace {

Dataset synthetic_images(std::int64_t count, std::int64_t rows, std::int64_t cols) {
  Rng rng(4);
  Dataset d;
  d.count = count;
  d.example_shape = {1, rows, cols};
  d.num_classes = kFashionMnistClasses;
  d.features = rows * cols;
  for (std::int64_t i = 0; i < count; ++i) {
    d.labels.push_back(static_cast<std::uint8_t>(rng.below(kFashionMnistClasses)));
    for (std::int64_t f = 0; f < d.features; ++f) d.bytes.push_back(static_cast<std::uint8_t>(rng.below(256)));
  }
  return d;
}

// A table of float features with two regression targets: the other path
// through the trainer (float inputs, standardized targets, squared error).
Dataset synthetic_table(std::int64_t count, std::int64_t features) {
  Rng rng(5);
  Dataset d;
  d.count = count;
  d.example_shape = {features};
  d.features = features;
  d.task = Task::regress;
  d.target_dims = 2;
  for (std::int64_t i = 0; i < count; ++i) {
    for (std::int64_t f = 0; f < features; ++f) d.values.push_back(static_cast<float>(rng.normal()));
    d.targets.push_back(d.values[static_cast<std::size_t>(i * features)] * 3.0f + 7.0f);
    d.targets.push_back(static_cast<float>(rng.normal()));
  }
  return d;
}

// Allocations between consecutive progress reports of one epoch (20 steps each).
std::vector<long> allocations_between_reports(const std::string& spec, const Shape& input, BnPlacement bn,
                                              const std::string& optimizer) {
  Model model = Model::from_architecture(parse_arch(spec, input, bn, {}));
  Rng rng(1);
  model.init_parameters(rng);
  auto opt = make_optimizer(optimizer, 0.01f, 0.9f, 1e-4f);
  // A last batch of one is dropped.
  const Dataset data =
      input.size() == 1 && input[0] == 30 ? synthetic_table(64 * 61 + 1, 30) : synthetic_images(64 * 61 + 1, 28, 28);
  const Preprocessing norm(InputNormalization::fit(data, data.has_bytes() ? "pixel" : "feature"),
                           TargetNormalization::fit(data));
  std::vector<long> counts;
  long at_last_report = 0;
  Trainer trainer(model, *opt, norm, {1, 64, 0, true});
  trainer.fit(
      data, {},
      [&](const Progress& p) {
        g_counting = false;
        const long now = g_allocations.load() + static_cast<long>(mapped_storage_count());
        if (p.batch > 1) counts.push_back(now - at_last_report);
        at_last_report = now;
        g_counting = true;
      },
      nullptr);
  g_counting = false;
  return counts;
}

TEST(Allocation, TrainingStepsAllocateNothingOnceRunning) {
  struct Case {
    std::string spec;
    Shape input;
    BnPlacement bn;
    std::string optimizer;
  };
  const Case cases[] = {
      {"fc:256,bn,relu,fc:256,bn,relu,fc:10", {784}, BnPlacement::before, "sgd"},
      {"fc:64,bn,relu,fc:10", {784}, BnPlacement::after, "adam"},
      {"fc:64,bn,tanh,fc:10", {784}, BnPlacement::none, "sgd"},
      // its second convolution (8 channels in) runs on oneDNN in a BNORM_CONV=onednn build
      {"conv3x3:8,bn,relu,maxpool2,conv3x3:8,bn,relu,gap,dropout:0.2,fc:10", {1, 28, 28}, BnPlacement::before, "sgd"},
      // 64 x 24 x 28 x 28 floats: 4.8 MB activations, so storage of their own
      {"conv3x3:24,bn,relu,gap,fc:10", {1, 28, 28}, BnPlacement::before, "sgd"},
      // float features, regression (the input shape {30} selects the table)
      {"fc:64,bn,relu,fc:2", {30}, BnPlacement::before, "adam"},
      // GroupNorm and LayerNorm keep their statistics' buffers between steps
      {"conv3x3:8,gn:4,relu,maxpool2,flatten,fc:32,ln,relu,fc:10", {1, 28, 28}, BnPlacement::before, "sgd"},
  };
  for (const Case& c : cases) {
    const std::vector<long> counts = allocations_between_reports(c.spec, c.input, c.bn, c.optimizer);
    ASSERT_GE(counts.size(), 2u) << c.spec;
    // The first stretch may still size buffers (the first report comes after
    // step 1); every later stretch of 20 steps must allocate nothing.
    for (std::size_t i = 1; i < counts.size(); ++i)
      EXPECT_EQ(counts[i], 0) << c.spec << ": " << counts[i] << " allocations in steps " << 20 * i + 1 << ".."
                              << 20 * (i + 1);
  }
}

// The counter itself works: a vector that grows is seen.
TEST(Allocation, CounterSeesAnAllocation) {
  g_allocations = 0;
  g_counting = true;
  std::vector<int>* v = new std::vector<int>(100);
  g_counting = false;
  delete v;
  EXPECT_GE(g_allocations.load(), 2);
}

// Buffers of kHugePageMinBytes and more are mapped, not taken from operator
// new (where this build maps them), and the count the training test adds
// sees them; they hold their alignment and their values.
TEST(Allocation, LargeBuffersAreCounted) {
  const std::int64_t before = mapped_storage_count();
  const std::int64_t n = static_cast<std::int64_t>(kHugePageMinBytes / sizeof(float)) + 1000;
  {
    Tensor t(Shape{n});
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % 64, 0u);
    for (std::int64_t i = 0; i < n; ++i) t[i] = static_cast<float>(i);
    t.resize(Shape{2 * n});  // grows: a new buffer, the old values copied over
    for (std::int64_t i = 0; i < n; i += 4093) ASSERT_EQ(t[i], static_cast<float>(i));
  }
  EXPECT_EQ(mapped_storage_count() - before, large_storage_is_mapped() ? 2 : 0);
}

// Large buffers allocated one after another start on different lines below
// 4 KiB (where this build maps them), still 64-byte aligned, and each can be
// written to its last value and freed, in any order.
TEST(Allocation, LargeBuffersStartOnDifferentLines) {
  const std::int64_t n = static_cast<std::int64_t>(kHugePageMinBytes / sizeof(float)) + 17;
  std::vector<Tensor> tensors;
  std::vector<std::uintptr_t> low_bits;
  for (int i = 0; i < 4; ++i) {
    tensors.emplace_back(Shape{n});
    Tensor& t = tensors.back();
    const auto at = reinterpret_cast<std::uintptr_t>(t.data());
    EXPECT_EQ(at % 64, 0u);
    low_bits.push_back(at % 4096);
    t[0] = 1.0f;
    t[n - 1] = 2.0f;
    ASSERT_EQ(t[n - 1], 2.0f);
  }
  if (large_storage_is_mapped()) {
    for (std::size_t i = 1; i < low_bits.size(); ++i)
      EXPECT_NE(low_bits[i], low_bits[i - 1]) << "buffers " << i - 1 << " and " << i;
  }
  tensors.erase(tensors.begin() + 1);  // freed out of order
  tensors.clear();
}

}  // namespace
}  // namespace bnorm
