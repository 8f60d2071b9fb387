#include "experiments.hpp"

namespace bnorm::exp {

const std::vector<Experiment>& experiments() {
  static const std::vector<Experiment> list = {
      {"speed", "BN makes optimization faster and tolerates larger learning rates", run_speed},
      {"covariate-shift", "BN steadies the distribution each layer sees", run_covariate_shift},
      {"regularization", "The noise of mini-batch statistics regularizes, less as the batch grows", run_regularization},
      {"test-time", "At test time running averages are right and an example's own statistics are nonsense",
       run_test_time},
      {"input-normalization", "Standardized inputs help, and BN makes their scale matter less",
       run_input_normalization},
      {"small-batch",
       "BN degrades at small batches, where Batch Renorm, Ghost BN, GroupNorm and LayerNorm hold up better and "
       "recalibration helps most",
       run_small_batch},
  };
  return list;
}

}  // namespace bnorm::exp
