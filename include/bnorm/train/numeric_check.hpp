#pragma once
// Numeric fault detection for the training loop. The per-step check is one
// branch-free pass over a span; only when it fails does the trainer walk the
// layers (diagnose_numeric_fault) to name the first one that went bad.
#include <span>
#include <string>

#include "bnorm/nn/model.hpp"

namespace bnorm {

// True if no value is NaN or ±inf.
bool all_finite(std::span<const float> values);

// After a forward and backward whose loss or gradients were non-finite: the
// first layer, in the order the values were computed, whose output (forward,
// first to last) or gradient (backward, last to first: its parameters' or its
// input's) holds a non-finite value, as "layer 3 (batchnorm) output". Reads
// what the model kept from that forward/backward; recomputes nothing.
std::string diagnose_numeric_fault(const Model& model);

}  // namespace bnorm
