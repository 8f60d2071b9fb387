#include "bnorm/train/optimizer.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "bnorm/error.hpp"

namespace bnorm {
namespace {

// Below this many parameters one thread updates them faster than two meet.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// Calls update(begin, end) for this thread's share of each tensor (ends as
// kept by Optimizer::set_tensor_ends, in order), or of the whole buffer when
// the ends do not end where it does. Shares are the proportional ones the
// matrix products' row slices come closest to (gemm_slices.hpp); a share
// that misses a slice by a row costs a few cache lines, not a wrong value.
template <class Update>
void for_each_share(std::int64_t size, const std::vector<std::int64_t>& ends, Update update) {
  const bool described = !ends.empty() && ends.back() == size;
#pragma omp parallel if (size >= kParallelMin)
  {
    const std::int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const auto share = [&](std::int64_t begin, std::int64_t end) {
      update(begin + (end - begin) * t / threads, begin + (end - begin) * (t + 1) / threads);
    };
    if (described) {
      for (std::size_t k = 0; k < ends.size(); ++k) share(k == 0 ? 0 : ends[k - 1], ends[k]);
    } else {
      share(0, size);
    }
  }
}

}  // namespace

// Checked once here rather than at every step: out of order, the shares
// would leave values without an update.
void Optimizer::set_tensor_ends(std::vector<std::int64_t> ends) {
  const bool in_order = !ends.empty() && ends.front() >= 0 && std::is_sorted(ends.begin(), ends.end());
  tensor_ends_ = in_order ? std::move(ends) : std::vector<std::int64_t>{};
}

Sgd::Sgd(float lr, float momentum, float weight_decay) : lr_(lr), momentum_(momentum), weight_decay_(weight_decay) {}

void Sgd::step(std::span<float> params, std::span<const float> grads) {
  if (velocity_.size() != params.size()) velocity_.assign(params.size(), 0.0f);
  ++steps_;
  for_each_share(static_cast<std::int64_t>(params.size()), tensor_ends_, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grads[i] + weight_decay_ * params[i];
      velocity_[i] = momentum_ * velocity_[i] + g;
      params[i] -= lr_ * velocity_[i];
    }
  });
}

Adam::Adam(float lr, float beta1, float beta2, float eps, float weight_decay)
    : lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay) {}

void Adam::step(std::span<float> params, std::span<const float> grads) {
  if (m_.size() != params.size()) {
    m_.assign(params.size(), 0.0f);
    v_.assign(params.size(), 0.0f);
    t_ = 0;
  }
  ++t_;
  const float bias1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(beta1_), static_cast<double>(t_)));
  const float bias2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(beta2_), static_cast<double>(t_)));
  const float step_size = lr_ / bias1;
  const float inv_sqrt_bias2 = 1.0f / std::sqrt(bias2);
  for_each_share(static_cast<std::int64_t>(params.size()), tensor_ends_, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float g = grads[i] + weight_decay_ * params[i];
      m_[i] = beta1_ * m_[i] + (1.0f - beta1_) * g;
      v_[i] = beta2_ * v_[i] + (1.0f - beta2_) * g * g;
      params[i] -= step_size * m_[i] / (std::sqrt(v_[i]) * inv_sqrt_bias2 + eps_);
    }
  });
}

namespace {

// The buffer called name in state, checked: empty or num_params finite values
// (and, for a second moment, none negative).
const std::vector<float>& checked_buffer(const OptimizerState& state, const std::string& optimizer,
                                         const std::string& name, std::size_t num_params, bool non_negative) {
  for (const auto& [n, values] : state.buffers) {
    if (n != name) continue;
    if (!values.empty() && values.size() != num_params)
      throw Error(optimizer + " state '" + name + "' has " + std::to_string(values.size()) + " values, the model has " +
                  std::to_string(num_params) + " parameters");
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]) || (non_negative && values[i] < 0.0f))
        throw Error(optimizer + " state '" + name + "' holds an invalid value at index " + std::to_string(i));
    return values;
  }
  throw Error(optimizer + " state lacks '" + name + "'");
}

void check_buffer_names(const OptimizerState& state, const std::string& optimizer,
                        std::initializer_list<const char*> names) {
  if (state.buffers.size() != names.size())
    throw Error(optimizer + " state has " + std::to_string(state.buffers.size()) + " buffers, expected " +
                std::to_string(names.size()));
  if (state.steps < 0) throw Error(optimizer + " state has a negative step count");
}

}  // namespace

OptimizerState Sgd::export_state() const { return {{{"velocity", velocity_}}, steps_}; }

void Sgd::import_state(const OptimizerState& state, std::size_t num_params) {
  check_buffer_names(state, "sgd", {"velocity"});
  velocity_ = checked_buffer(state, "sgd", "velocity", num_params, false);
  steps_ = state.steps;
}

OptimizerState Adam::export_state() const { return {{{"m", m_}, {"v", v_}}, t_}; }

void Adam::import_state(const OptimizerState& state, std::size_t num_params) {
  check_buffer_names(state, "adam", {"m", "v"});
  const auto& m = checked_buffer(state, "adam", "m", num_params, false);
  const auto& v = checked_buffer(state, "adam", "v", num_params, true);
  if (m.size() != v.size() || (m.empty() != (state.steps == 0)))
    throw Error("adam state: m, v and the step count t disagree");
  m_ = m;
  v_ = v;
  t_ = state.steps;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, float lr, float momentum, float weight_decay) {
  if (!(lr > 0.0f) || !std::isfinite(lr)) throw Error("learning rate must be a positive finite number");
  if (!(momentum >= 0.0f && momentum < 1.0f)) throw Error("momentum must be in [0, 1)");
  if (!(weight_decay >= 0.0f) || !std::isfinite(weight_decay)) throw Error("weight decay must be >= 0");
  if (name == "sgd") return std::make_unique<Sgd>(lr, momentum, weight_decay);
  if (name == "adam") return std::make_unique<Adam>(lr, 0.9f, 0.999f, 1e-8f, weight_decay);
  throw Error("unknown optimizer '" + name + "' (expected sgd or adam)");
}

}  // namespace bnorm
