#pragma once
// Data-parallel training over MPI (OpenMPI from Debian). Built only where
// CMake found MPI (the bnorm_dist library, BNORM_HAVE_MPI); this header names
// no MPI type, so its users compile without mpi.h.
#include <memory>
#include <string>

#include "bnorm/train/data_parallel.hpp"

namespace bnorm::dist {

// MPI for the life of the object: MPI_Init on construction, MPI_Finalize on
// destruction. One per process, made once the command line asks for it.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // Every process of the job (MPI_COMM_WORLD).
  DataParallel& world() { return *world_; }
  int rank() const;
  int size() const;
  // Processes of this job on this machine (they share its cores).
  int local_size() const { return local_size_; }
  // Prints "bnorm: error (rank r of K): message" on stderr and ends every
  // process of the job with exit status `code`: a failure on one rank must
  // not leave the others waiting in a collective forever.
  [[noreturn]] void abort(const std::string& message, int code);

 private:
  std::unique_ptr<DataParallel> world_;
  int local_size_ = 1;
};

}  // namespace bnorm::dist
