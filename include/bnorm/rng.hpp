#pragma once
// Reproducible randomness. std::mt19937_64's output sequence is fixed by the
// C++ standard, but the standard distributions are not, so the few we need are
// written here: a seed then gives the same run on any standard library.
#include <cstdint>
#include <random>
#include <string>

namespace bnorm {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}

  std::uint64_t next_u64() { return engine_(); }
  double uniform();                          // [0, 1)
  double normal();                           // mean 0, variance 1 (Box-Muller)
  std::uint64_t below(std::uint64_t bound);  // uniform in [0, bound), unbiased
  // Skips n draws of next_u64 (or uniform: one draw each).
  void discard(std::uint64_t n) { engine_.discard(n); }

  // The whole state as text (the engine's standard text form, then the
  // Box-Muller spare), so a checkpoint resumes the exact same stream.
  std::string state() const;
  void set_state(const std::string& text);  // throws Error if text is not a state()

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace bnorm
