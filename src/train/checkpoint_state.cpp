#include "bnorm/train/checkpoint_state.hpp"

#include "bnorm/error.hpp"
#include "bnorm/json_number.hpp"

namespace bnorm {
namespace {

template <class T>
T field(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) throw Error(std::string("position lacks \"") + key + "\"");
  if (const auto v = json_number<T>(j.at(key))) return *v;
  throw Error(std::string("position \"") + key + "\" has the wrong type or is out of range");
}

}  // namespace

nlohmann::json position_to_json(const TrainPosition& p) {
  return nlohmann::json{{"epoch", p.epoch}, {"batch", p.batch},       {"global_step", p.global_step},
                        {"rng", p.rng},     {"loss_sum", p.loss_sum}, {"correct", p.correct},
                        {"seen", p.seen},   {"skipped", p.skipped}};
}

TrainPosition position_from_json(const nlohmann::json& j) {
  TrainPosition p;
  p.epoch = field<std::int64_t>(j, "epoch");
  p.batch = field<std::int64_t>(j, "batch");
  p.global_step = field<std::int64_t>(j, "global_step");
  if (!j.contains("rng") || !j.at("rng").is_string()) throw Error("position \"rng\" is missing or not a string");
  p.rng = j.at("rng").get<std::string>();
  p.loss_sum = field<double>(j, "loss_sum");
  p.correct = field<std::int64_t>(j, "correct");
  p.seen = field<std::int64_t>(j, "seen");
  p.skipped = field<std::int64_t>(j, "skipped");
  return p;
}

}  // namespace bnorm
