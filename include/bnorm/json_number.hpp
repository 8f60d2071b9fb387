#pragma once
// Reads a JSON number as T only if T can hold it. nlohmann's get<T>()
// converts with a plain cast, which is undefined behaviour when the value is
// out of range (3.3e42 as int64, 1e300 as float, found by fuzzing), so every
// number from a file goes through here instead.
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>

namespace bnorm {

template <class T>
std::optional<T> json_number(const nlohmann::json& j) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return std::nullopt;
    return j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // Only JSON integers: a fraction or exponent is not a count.
    if (j.is_number_unsigned()) {
      const auto v = j.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return std::nullopt;
      return static_cast<T>(v);
    }
    if (j.is_number_integer()) {
      const auto v = j.get<std::int64_t>();  // negative here (non-negative ones are "unsigned")
      if constexpr (std::is_unsigned_v<T>) {
        return std::nullopt;
      } else {
        if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min())) return std::nullopt;
        return static_cast<T>(v);
      }
    }
    return std::nullopt;
  } else {
    static_assert(std::is_floating_point_v<T>);
    if (!j.is_number()) return std::nullopt;
    const double v = j.get<double>();
    if (std::abs(v) > static_cast<double>(std::numeric_limits<T>::max())) return std::nullopt;
    return static_cast<T>(v);
  }
}

}  // namespace bnorm
