#include "bnorm/train/optimizer.hpp"

#include <cmath>

#include "bnorm/error.hpp"

namespace bnorm {

Sgd::Sgd(float lr, float momentum, float weight_decay) : lr_(lr), momentum_(momentum), weight_decay_(weight_decay) {}

void Sgd::step(std::span<float> params, std::span<const float> grads) {
  if (velocity_.size() != params.size()) velocity_.assign(params.size(), 0.0f);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const float g = grads[i] + weight_decay_ * params[i];
    velocity_[i] = momentum_ * velocity_[i] + g;
    params[i] -= lr_ * velocity_[i];
  }
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
  for (std::size_t i = 0; i < params.size(); ++i) {
    const float g = grads[i] + weight_decay_ * params[i];
    m_[i] = beta1_ * m_[i] + (1.0f - beta1_) * g;
    v_[i] = beta2_ * v_[i] + (1.0f - beta2_) * g * g;
    params[i] -= step_size * m_[i] / (std::sqrt(v_[i]) * inv_sqrt_bias2 + eps_);
  }
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
