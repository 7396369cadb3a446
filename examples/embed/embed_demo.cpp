// Embedding nnx from C++: register the application's own op (the seed's YOLO head), load a
// model, run it on an input read from .npy and write every output as `nnx run --out` does.
//   embed_demo ARCH.json WEIGHTS.pth INPUT.npy OUTDIR   ->  OUTDIR/out0.npy, out1.npy, ...
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "nnx/nnx.hpp"
#include "yolo_head.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: embed_demo ARCH.json WEIGHTS.pth INPUT.npy OUTDIR\n");
    return 2;
  }
  try {
    example::register_yolo_head();
    nnx::Model model = nnx::load(argv[1], argv[2]);
    nnx::Executor net(model);
    std::vector<nnx::Tensor> outputs = net(nnx::read_npy(argv[3]).to(nnx::DType::f32));
    std::filesystem::create_directories(argv[4]);
    for (size_t k = 0; k < outputs.size(); ++k) {
      std::string path = (std::filesystem::path(argv[4]) / ("out" + std::to_string(k) + ".npy"));
      nnx::write_npy(path, outputs[k]);
      std::printf("output %zu: %s -> %s\n", k, outputs[k].shape().str().c_str(), path.c_str());
    }
  } catch (const nnx::Error& e) {
    std::fprintf(stderr, "embed_demo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embed_demo: error: %s\n", e.what());
    return 3;
  }
  return 0;
}
