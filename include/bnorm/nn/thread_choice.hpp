#pragma once
// Whether a small pass runs on the OpenMP team or on the calling thread
// alone, chosen by timing both from time to time.
//
// On a pass of a few tens of microseconds a second thread can cost more than
// it brings, and by how much depends on the host at the moment, not on the
// CPU: on the shared 2-core EPYC of 2026-12-04 a 64x512 batch norm's
// forward+backward took 0.016 ms on two threads in one minute and
// 0.037-0.048 ms in the next, while one thread took 0.024 ms throughout.
// No size threshold is right in both minutes, so the layer measures.
// Every kPeriod calls it runs kPhase calls on one thread, then kPhase on the
// team. Only the second half of each phase counts: the first calls after a
// switch pay for it (a sleeping thread woken, or an idle one still spinning
// on the core the other shares). Each side is judged by the median of its
// counted calls, so that one call slowed by an interrupt does not decide
// (with sums, one such call on the single thread's side was enough to hand
// the next 256 calls to a slower team), and the team must be faster by
// kTeamMargin: on a tie one thread is the steadier choice, since the team's
// times depend on the other core being free.
// The results do not change: the batch-norm kernels give the same
// bits on any number of threads (tests/test_bn_kernels.cpp,
// ThreadCountDoesNotChangeBits).
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>

namespace bnorm {

class ThreadChoice {
 public:
  static constexpr std::int64_t kPeriod = 256;  // calls from one probe to the next
  static constexpr std::int64_t kPhase = 8;     // calls on each side of a probe
  static constexpr double kTeamMargin = 0.9;    // the team's median must be below this times one thread's

  // Whether the next call should run on one thread.
  bool next_on_one_thread() const {
    const std::int64_t at = calls_ % kPeriod;
    return at < 2 * kPhase ? at < kPhase : one_thread_;
  }

  // The time the call just made took (on the threads next_on_one_thread said).
  void record(double seconds) {
    const std::int64_t at = calls_ % kPeriod;
    if (at < 2 * kPhase && at % kPhase >= kPhase / 2) {
      (at < kPhase ? one_times_ : team_times_)[static_cast<std::size_t>(at % kPhase - kPhase / 2)] = seconds;
    }
    if (at == 2 * kPhase - 1) one_thread_ = !(median(team_times_) < kTeamMargin * median(one_times_));
    ++calls_;
  }

  // pass() on the chosen threads, timed.
  template <class Pass>
  void run(Pass&& pass) {
    const bool one = next_on_one_thread();
    const int team = omp_get_max_threads();
    if (team == 1) {  // nothing to choose between
      pass();
      return;
    }
    struct Restore {
      int team;
      bool active;
      ~Restore() {
        if (active) omp_set_num_threads(team);
      }
    } restore{team, one};
    if (one) omp_set_num_threads(1);
    const auto start = std::chrono::steady_clock::now();
    pass();
    record(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  bool on_one_thread() const { return one_thread_; }

 private:
  using Counted = std::array<double, kPhase / 2>;  // one side's counted calls in this probe

  static double median(Counted t) {
    std::sort(t.begin(), t.end());
    return (t[(t.size() - 1) / 2] + t[t.size() / 2]) / 2;
  }

  std::int64_t calls_ = 0;
  bool one_thread_ = false;
  Counted one_times_{}, team_times_{};
};

}  // namespace bnorm
