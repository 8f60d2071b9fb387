#pragma once
// What a checkpoint keeps of a training run besides the model and the
// optimizer's buffers: where the run stands. The trainer owns this schema;
// io/checkpoint only stores it (the JSON below as metadata "position", the
// order as an I64 tensor), so io depends on train and never the reverse.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bnorm {

// Where a run stands between two steps. With the model's state and the
// optimizer's, it is everything a resumed run needs to continue bit for bit.
struct TrainPosition {
  std::int64_t epoch = 1;           // the epoch in progress, 1-based
  std::int64_t batch = 0;           // batches of it already done (may be all of them)
  std::int64_t global_step = 0;     // batches done since the run began, skipped ones included
  std::string rng;                  // Rng::state() after this epoch's shuffle
  std::vector<std::int64_t> order;  // this epoch's permutation of the training set
  // This epoch's running totals, so its report matches an uninterrupted run
  // (correct stays 0 for regression).
  double loss_sum = 0.0;
  std::int64_t correct = 0, seen = 0, skipped = 0;
};

// Every field but order, as a JSON object; doubles round-trip exactly.
nlohmann::json position_to_json(const TrainPosition& position);
// The inverse (order left empty). Throws Error naming the field that is
// missing, mistyped or out of range.
TrainPosition position_from_json(const nlohmann::json& j);

}  // namespace bnorm
