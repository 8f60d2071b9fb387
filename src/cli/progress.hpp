#pragma once
// A one-line progress bar for terminals: redrawn in place with '\r', showing
// loss, samples/s and the time left in the epoch. Off when not a terminal.
#include <cstdio>

#include "bnorm/train/trainer.hpp"

namespace bnorm::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::FILE* out);  // enabled only if out is a terminal
  bool enabled() const { return enabled_; }
  void update(const Progress& p);
  void clear();  // erases the line so the next print starts clean

 private:
  std::FILE* out_;
  bool enabled_;
  bool drawn_ = false;
};

}  // namespace bnorm::cli
