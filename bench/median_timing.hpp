#pragma once
// The timing the paired benchmarks share: each side's time is the median of
// many calls, so one call slowed by the shared machine does not move it.
#include <algorithm>
#include <chrono>
#include <vector>

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall time of `calls` calls of call(), in milliseconds.
template <class F>
double median_ms(F&& call, int calls) {
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}
