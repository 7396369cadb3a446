// NN-Executor's C++ API: load a model description with PyTorch weights and run it.
//   auto model = nnx::load("arch.json", "state.pth", {.device = nnx::Device::cpu(), .strict =
//   false}); nnx::Executor net(model); auto outputs = net(input);
// (The C API is nnx/nnx.h.)
#pragma once

#include "nnx/error.h"
#include "nnx/executor.h"
#include "nnx/loss.h"
#include "nnx/model.h"
#include "nnx/npy.h"
#include "nnx/op.h"
#include "nnx/optim.h"
#include "nnx/registry.h"
#include "nnx/tensor.h"
#include "nnx/value.h"
#include "nnx/version.h"
