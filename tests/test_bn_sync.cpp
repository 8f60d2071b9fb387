// Synchronized batch norm without MPI: Chan's merge against a direct double
// computation, the stage kernels, and K BatchNorm layers on K threads, each
// with a share of one batch (an empty share among them), against one layer
// holding the whole batch.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <thread>

#include "bnorm/error.hpp"
#include "bnorm/kernels/batchnorm.hpp"
#include "bnorm/nn/batch_stats_sync.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "test_util.hpp"

namespace bnorm::test {
namespace {

// Mean and M2 of values, two passes in double.
std::pair<double, double> direct_moments(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  const double mean = v.empty() ? 0.0 : sum / static_cast<double>(v.size());
  double m2 = 0;
  for (double x : v) m2 += (x - mean) * (x - mean);
  return {mean, m2};
}

TEST(MergeMoments, MatchesDirectComputationIncludingEmptyPartsAndAFarMean) {
  Rng rng(5);
  for (const double offset : {0.0, 1e6}) {
    const std::vector<std::size_t> sizes = {7, 0, 1, 130, 2, 0, 33};
    std::vector<double> all;
    std::vector<std::vector<double>> means(sizes.size()), m2s(sizes.size());
    std::vector<MomentsView> parts;
    for (std::size_t p = 0; p < sizes.size(); ++p) {
      std::vector<double> v;
      for (std::size_t i = 0; i < sizes[p]; ++i) v.push_back(offset + 0.3 * static_cast<double>(p) + rng.normal());
      all.insert(all.end(), v.begin(), v.end());
      const auto [mean, m2] = direct_moments(v);
      means[p] = {mean};
      m2s[p] = {m2};
      parts.push_back({static_cast<double>(v.size()), means[p], m2s[p]});
    }
    double mean = -1, m2 = -1;
    const double n = merge_moments({&mean, 1}, {&m2, 1}, parts);
    const auto [want_mean, want_m2] = direct_moments(all);
    EXPECT_EQ(n, static_cast<double>(all.size()));
    EXPECT_NEAR(mean, want_mean, 1e-12 * std::max(1.0, std::fabs(want_mean))) << "offset " << offset;
    // Variance near 1 at mean 1e6: a formula with E[x^2] - E[x]^2 would lose it all.
    EXPECT_NEAR(m2 / n, want_m2 / n, 1e-9) << "offset " << offset;
  }
  double mean = 1, m2 = 1;
  EXPECT_EQ(merge_moments({&mean, 1}, {&m2, 1}, {}), 0.0);
  EXPECT_EQ(mean, 0.0);
  EXPECT_EQ(m2, 0.0);
}

TEST(BatchNormStages, ChannelMomentsMatchDoubleReferenceAtMean1e6) {
  Rng rng(9);
  const std::int64_t N = 5, C = 3, S = 37;
  const Tensor x = random_tensor({N, C, S}, rng, 1e6, 1.0);
  std::vector<double> mean(C), m2(C), work(static_cast<std::size_t>(kernels::batchnorm_work_doubles(C)));
  kernels::batchnorm_channel_moments(mean.data(), m2.data(), x.data(), N, C, S, work.data());
  for (std::int64_t c = 0; c < C; ++c) {
    std::vector<double> v;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t s = 0; s < S; ++s) v.push_back(x[(n * C + c) * S + s]);
    const auto [want_mean, want_m2] = direct_moments(v);
    EXPECT_NEAR(mean[c], want_mean, 1e-6);
    EXPECT_NEAR(m2[c] / static_cast<double>(N * S), want_m2 / static_cast<double>(N * S), 1e-6);
  }
  // No values: zeros, and x is never read.
  kernels::batchnorm_channel_moments(mean.data(), m2.data(), nullptr, 0, C, S, work.data());
  for (std::int64_t c = 0; c < C; ++c) EXPECT_EQ(mean[c] + m2[c], 0.0);
}

// K threads standing in for K processes: a barrier and a slot per member.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), slots_(static_cast<std::size_t>(size)), barrier_(size) {}

  class Member final : public BatchStatsSync {
   public:
    Member(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
    int size() const override { return group_.size_; }
    void allgather(std::span<double> out, std::span<const double> in) override {
      group_.slots_[static_cast<std::size_t>(rank_)].assign(in.begin(), in.end());
      group_.barrier_.arrive_and_wait();
      for (std::size_t r = 0; r < group_.slots_.size(); ++r)
        std::copy(group_.slots_[r].begin(), group_.slots_[r].end(),
                  out.begin() + static_cast<std::ptrdiff_t>(r * in.size()));
      group_.barrier_.arrive_and_wait();  // nobody overwrites a slot still being read
    }
    void allreduce_sum(std::span<double> data) override {
      std::vector<double> all(data.size() * static_cast<std::size_t>(size()));
      allgather(all, data);
      for (std::size_t i = 0; i < data.size(); ++i) {
        double sum = 0;
        for (int r = 0; r < size(); ++r) sum += all[static_cast<std::size_t>(r) * data.size() + i];
        data[i] = sum;
      }
    }

   private:
    ThreadGroup& group_;
    int rank_;
  };

 private:
  int size_;
  std::vector<std::vector<double>> slots_;
  std::barrier<> barrier_;
};

// Rows [begin, begin + count) of an (N, ...) tensor.
Tensor rows(const Tensor& t, std::int64_t begin, std::int64_t count) {
  Shape shape = t.shape();
  const std::int64_t per_row = t.size() / shape[0];
  shape[0] = count;
  Tensor out(shape);
  std::copy(t.data() + begin * per_row, t.data() + (begin + count) * per_row, out.data());
  return out;
}

void expect_close(std::span<const float> got, std::span<const float> want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (float v : want) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * std::max(scale, 1.0)) << what << " at " << i;
}

void check_split(const Shape& shape, const std::vector<std::int64_t>& shares, double mean, bool fused_relu = false) {
  const std::int64_t C = shape[1];
  Rng rng(21);
  const Tensor x = random_tensor(shape, rng, mean, 2.0);
  const Tensor dy = random_tensor(shape, rng, 0.5, 1.0);
  BatchNormOptions options;
  options.momentum = 0.3f;

  // One layer, the whole batch; gamma and beta moved off 1 and 0.
  LayerHarness whole(std::make_unique<BatchNorm>(C, options));
  static_cast<BatchNorm&>(*whole.layer).set_fused_relu(fused_relu);
  for (std::int64_t c = 0; c < C; ++c)
    whole.params[c] = 0.5f + 0.1f * static_cast<float>(c), whole.params[C + c] = 0.2f;
  Tensor y_whole, dx_whole;
  whole->forward(y_whole, x, Mode::train);
  whole->backward(&dx_whole, dy);

  const int K = static_cast<int>(shares.size());
  ThreadGroup group(K);
  std::vector<std::unique_ptr<LayerHarness>> parts;
  std::vector<Tensor> y(K), dx(K);
  for (int k = 0; k < K; ++k) {
    parts.push_back(std::make_unique<LayerHarness>(std::make_unique<BatchNorm>(C, options)));
    parts[k]->params = whole.params;
    parts[k]->layer->bind_parameters(parts[k]->params, parts[k]->grads);
    std::fill(parts[k]->grads.begin(), parts[k]->grads.end(), 1e30f);  // junk: backward must assign
  }
  std::vector<std::thread> threads;
  std::int64_t begin = 0;
  for (int k = 0; k < K; ++k) {
    threads.emplace_back([&, k, begin] {
      ThreadGroup::Member member(group, k);
      auto& bn = static_cast<BatchNorm&>(*parts[k]->layer);
      bn.set_stats_sync(&member);
      bn.set_fused_relu(fused_relu);
      const Tensor xs = rows(x, begin, shares[k]), dys = rows(dy, begin, shares[k]);
      bn.forward(y[k], xs, Mode::train);
      dx[k].resize(xs.shape());
      std::fill(dx[k].data(), dx[k].data() + dx[k].size(), 1e30f);
      bn.backward(&dx[k], dys);
      bn.set_stats_sync(nullptr);
    });
    begin += shares[k];
  }
  for (auto& t : threads) t.join();

  std::vector<float> y_all, dx_all, grads(whole.grads.size(), 0.0f);
  for (int k = 0; k < K; ++k) {
    y_all.insert(y_all.end(), y[k].data(), y[k].data() + y[k].size());
    dx_all.insert(dx_all.end(), dx[k].data(), dx[k].data() + dx[k].size());
    for (std::size_t i = 0; i < grads.size(); ++i) grads[i] += parts[k]->grads[i];
    auto& bn = static_cast<BatchNorm&>(*parts[k]->layer);
    auto& ref = static_cast<BatchNorm&>(*whole.layer);
    expect_close(bn.running_mean(), ref.running_mean(), 1e-6, "running mean");
    expect_close(bn.running_var(), ref.running_var(), 1e-6, "running var");
    EXPECT_EQ(bn.num_batches_tracked(), 1);
  }
  expect_close(y_all, y_whole.span(), 1e-5, "y");
  expect_close(dx_all, dx_whole.span(), 1e-5, "dx");
  expect_close(grads, whole.grads, 1e-5, "dgamma, dbeta (summed over parts)");
}

TEST(SynchronizedBatchNorm, SharesOnThreadsMatchOneLayerOnTheWholeBatch) {
  check_split({10, 6}, {4, 3, 3}, 0.0);        // uneven shares
  check_split({2, 5}, {1, 1, 0}, 3.0);         // shares of one and an empty one
  check_split({7, 3, 4, 5}, {0, 5, 2}, -2.0);  // (N, C, H, W), rank 0 empty
  check_split({9, 4}, {9}, 1e6);               // one process, mean 1e6
  // Fused with the ReLU after it (as a model runs BN + ReLU): mask and all.
  check_split({10, 6}, {4, 3, 3}, 0.0, true);
  check_split({7, 3, 4, 5}, {0, 5, 2}, -2.0, true);
}

TEST(SynchronizedBatchNorm, WholeBatchOfOneValueIsRefusedOnEveryMember) {
  ThreadGroup group(2);
  std::vector<std::thread> threads;
  std::vector<int> refused(2, 0);
  for (int k = 0; k < 2; ++k)
    threads.emplace_back([&, k] {
      ThreadGroup::Member member(group, k);
      LayerHarness h(std::make_unique<BatchNorm>(3));
      static_cast<BatchNorm&>(*h.layer).set_stats_sync(&member);
      Tensor x({k == 0 ? 1 : 0, 3}), y;
      try {
        h->forward(y, x, Mode::train);
      } catch (const Error&) {
        refused[k] = 1;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused[0] + refused[1], 2);
}

}  // namespace
}  // namespace bnorm::test
