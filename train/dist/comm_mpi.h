// The MPI and NCCL communicators (nnx/comm.h), built into the nnx command where MPI (NNX_MPI)
// and, with the CUDA backend, NCCL are found.
#pragma once

#include <memory>

#include "nnx/comm.h"

namespace nnx::dist {

// Initialises MPI (once; finalised when the communicator is destroyed) and returns the world.
// Errors return instead of aborting; a collective that has not completed after `timeout_s`
// seconds throws Error(device) naming this rank.
std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s);

#ifdef NNX_WITH_NCCL
// NCCL over the ranks of `mpi` (which carries the unique id), on CUDA device `device`;
// pointers passed to its collectives are device memory.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device,
                                                     double timeout_s);
#endif

}  // namespace nnx::dist
