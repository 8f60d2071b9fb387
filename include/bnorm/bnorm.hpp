#pragma once
// Everything a user of the library needs to build, train, save and load a
// model, in one include. The kernels (bnorm/kernels/) and the data-parallel
// parts (bnorm/dist/, bnorm/train/data_parallel.hpp) are left out: they are
// the layers' internals and the MPI build's, not the library's interface.
#include "bnorm/error.hpp"
#include "bnorm/rng.hpp"
#include "bnorm/tensor.hpp"

#include "bnorm/nn/activation.hpp"
#include "bnorm/nn/arch.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/conv2d.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/layer_factory.hpp"
#include "bnorm/nn/linear.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/pooling.hpp"

#include "bnorm/train/dataset.hpp"
#include "bnorm/train/optimizer.hpp"
#include "bnorm/train/trainer.hpp"

#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/csv.hpp"
#include "bnorm/io/dataset.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/io/npy.hpp"
#include "bnorm/io/safetensors.hpp"
#include "bnorm/io/table_dataset.hpp"
