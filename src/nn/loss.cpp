#include "bnorm/nn/loss.hpp"

#include "bnorm/error.hpp"
#include "bnorm/kernels/softmax_xent.hpp"

namespace bnorm {

LossResult softmax_cross_entropy(const Tensor& logits, std::span<const std::int32_t> labels, Tensor* dlogits) {
  if (logits.rank() != 2 || logits.dim(0) != static_cast<std::int64_t>(labels.size()))
    throw Error("loss: logits " + shape_str(logits.shape()) + " do not match " + std::to_string(labels.size()) +
                " labels");
  const std::int64_t N = logits.dim(0), K = logits.dim(1);
  for (const std::int32_t label : labels)
    if (label < 0 || label >= K)
      throw Error("loss: label " + std::to_string(label) + " is not a class 0.." + std::to_string(K - 1));
  if (dlogits) dlogits->resize(logits.shape());
  LossResult r;
  r.loss = kernels::softmax_cross_entropy(dlogits ? dlogits->data() : nullptr, logits.data(), labels.data(), N, K);
  for (std::int64_t n = 0; n < N; ++n) {  // a row at a time: no buffer to allocate per batch
    std::int64_t predicted = 0;
    kernels::argmax_rows(&predicted, logits.data() + n * K, 1, K);
    r.correct += predicted == labels[static_cast<std::size_t>(n)];
  }
  return r;
}

LossResult mean_squared_error(const Tensor& pred, std::span<const float> targets, Tensor* dpred) {
  if (pred.rank() != 2 || pred.size() != static_cast<std::int64_t>(targets.size()))
    throw Error("loss: predictions " + shape_str(pred.shape()) + " do not match " + std::to_string(targets.size()) +
                " target values");
  if (dpred) dpred->resize(pred.shape());
  LossResult r;
  r.loss = kernels::mean_squared_error(dpred ? dpred->data() : nullptr, pred.data(), targets.data(), pred.dim(0),
                                       pred.dim(1));
  return r;
}

}  // namespace bnorm
