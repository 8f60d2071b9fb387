// MPI behind the DataParallel interface. Collectives on MPI_COMM_WORLD:
//   allreduce_sum(float)   the flat gradient buffer, MPI_Allreduce in place
//   allgather(double)      batch-norm statistics: 1 + 2C doubles a process
//   allreduce_sum(double)  batch-norm gradient sums (2C) and totals: an
//                          allgather, then a sum in rank order, so every
//                          process gets the same bits whatever algorithm MPI
//                          picks (these are small: a few KB)
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "bnorm/dist/mpi.hpp"
#include "bnorm/error.hpp"

namespace bnorm::dist {
namespace {

// MPI counts are int; larger buffers go in pieces.
constexpr std::size_t kMaxCount = std::size_t{1} << 30;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}

class WorldComm final : public DataParallel {
 public:
  WorldComm() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allgather(std::span<double> out, std::span<const double> in) override {
    if (out.size() != in.size() * static_cast<std::size_t>(size_))
      throw Error("allgather: output holds " + std::to_string(out.size()) + " values, expected " +
                  std::to_string(in.size() * static_cast<std::size_t>(size_)));
    if (in.size() > kMaxCount) throw Error("allgather: too many values for one call");
    check(MPI_Allgather(in.data(), static_cast<int>(in.size()), MPI_DOUBLE, out.data(), static_cast<int>(in.size()),
                        MPI_DOUBLE, MPI_COMM_WORLD),
          "allgather");
  }

  void allreduce_sum(std::span<double> data) override {
    gathered_.resize(data.size() * static_cast<std::size_t>(size_));
    allgather(gathered_, data);
    for (std::size_t i = 0; i < data.size(); ++i) {
      double sum = 0.0;
      for (std::size_t r = 0; r < static_cast<std::size_t>(size_); ++r) sum += gathered_[r * data.size() + i];
      data[i] = sum;
    }
  }

  void allreduce_sum(std::span<float> data) override {
    for (std::size_t at = 0; at < data.size(); at += kMaxCount) {
      const std::size_t n = std::min(kMaxCount, data.size() - at);
      check(MPI_Allreduce(MPI_IN_PLACE, data.data() + at, static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
            "allreduce");
    }
  }

  void broadcast(std::span<unsigned char> data, int root) override {
    for (std::size_t at = 0; at < data.size(); at += kMaxCount) {
      const std::size_t n = std::min(kMaxCount, data.size() - at);
      check(MPI_Bcast(data.data() + at, static_cast<int>(n), MPI_UNSIGNED_CHAR, root, MPI_COMM_WORLD), "broadcast");
    }
  }

  std::vector<std::uint64_t> allgather(std::uint64_t value) override {
    std::vector<std::uint64_t> all(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "allgather");
    return all;
  }

 private:
  int rank_ = 0, size_ = 1;
  std::vector<double> gathered_;
};

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Only the main thread calls MPI (OpenMP threads never do).
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  }
  // Errors come back as codes (turned into exceptions above), not a silent abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  world_ = std::make_unique<WorldComm>();
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

MpiSession::~MpiSession() {
  world_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int MpiSession::rank() const { return world_->rank(); }
int MpiSession::size() const { return world_->size(); }

void MpiSession::abort(const std::string& message, int code) {
  std::fflush(stdout);
  std::fprintf(stderr, "bnorm: error (rank %d of %d): %s\n", rank(), size(), message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
}

}  // namespace bnorm::dist
