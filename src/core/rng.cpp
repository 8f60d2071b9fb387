#include "bnorm/rng.hpp"

#include <bit>
#include <cmath>
#include <numbers>
#include <sstream>

#include "bnorm/error.hpp"

namespace bnorm {

double Rng::uniform() {
  // The top 53 bits give every double in [0, 1) on a 2^-53 grid.
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();  // log(0) is -inf
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * std::numbers::pi * u2);
}

std::uint64_t Rng::below(std::uint64_t bound) {
  // Rejection sampling: drop the top partial copy of [0, bound) so every
  // residue is equally likely.
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
  std::uint64_t r;
  do r = engine_();
  while (r >= limit);
  return r % bound;
}

std::string Rng::state() const {
  std::ostringstream out;
  // The spare as its bit pattern: decimal text could round it.
  out << engine_ << ' ' << (has_spare_ ? 1 : 0) << ' ' << std::bit_cast<std::uint64_t>(spare_);
  return out.str();
}

void Rng::set_state(const std::string& text) {
  std::istringstream in(text);
  std::mt19937_64 engine;
  int has_spare = -1;
  std::uint64_t spare_bits = 0;
  in >> engine >> has_spare >> spare_bits;
  if (in.fail() || (has_spare != 0 && has_spare != 1) || !(in >> std::ws).eof())
    throw Error("random generator state is malformed");
  engine_ = engine;
  has_spare_ = has_spare == 1;
  spare_ = std::bit_cast<double>(spare_bits);
}

}  // namespace bnorm
