#include "progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

namespace bnorm::cli {

ProgressBar::ProgressBar(std::FILE* out) : out_(out), enabled_(::isatty(::fileno(out)) == 1) {}

void ProgressBar::update(const Progress& p) {
  if (!enabled_) return;
  constexpr int kWidth = 30;
  const double frac = p.batches > 0 ? static_cast<double>(p.batch) / static_cast<double>(p.batches) : 1.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  const double rate = p.seconds > 0 ? static_cast<double>(p.samples_done) / p.seconds : 0.0;
  const double eta = frac > 0 ? p.seconds * (1.0 - frac) / frac : 0.0;
  std::fprintf(out_, "\r\033[2Kepoch %lld/%lld [%s] %3.0f%%  loss %.4f  %.0f samples/s  ETA %.1fs",
               static_cast<long long>(p.epoch), static_cast<long long>(p.epochs), bar.c_str(), frac * 100.0,
               p.running_loss, rate, std::max(eta, 0.0));
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(out_, "\r\033[2K");
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace bnorm::cli
