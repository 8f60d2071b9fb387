#pragma once
#include "bnorm/nn/model.hpp"

namespace bnorm {

// Folds each batch norm that directly follows a Linear or Conv2d into that
// layer's weights, for inference: with s = γ / √(running_var + ε) per channel,
//   w' = w · s          b' = (b − running_mean) · s + β
// (b = 0 where the layer had no bias). The returned model computes the same
// eval-mode outputs with one pass fewer over memory per folded BN. Batch norms
// elsewhere (after an activation) and ones without running statistics stay.
Model fold_batchnorm(Model& model);

}  // namespace bnorm
