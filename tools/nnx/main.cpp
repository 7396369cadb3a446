// nnx: run, inspect, convert and benchmark models from the command line.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

#include "tools/nnx/cli.h"

namespace {

const char* kUsageText =
    "usage: nnx <command> [options] [--plugin LIB.so]... (user ops: nnx/plugin.h)\n"
    "commands:\n"
    "  run ARCH [--weights W] [--input X.npy]... [--shape N,C,H,W]... [--device cpu|cuda|auto]\n"
    "           [--precision fp32|tf32|fp16|bf16] [--threads N] [--no-strict] [--out DIR]\n"
    "  info ARCH [--weights W] [--shape N,C,H,W]... [--no-strict] [--json]\n"
    "  convert ARCH [--weights W] [--no-strict] --out PATH(.json|.pth|.safetensors)\n"
    "  bench ARCH [--weights W] [--shape N,C,H,W]... [--batch N] [--device cpu|cuda]\n"
    "             [--threads N] [--precision fp32|tf32|fp16|bf16] [--cuda-graph on|off]\n"
    "             [--batch-split on|off] [--iters N] [--warmup K] [--profile] [--progress]\n"
    "             [--json]\n"
    "  graph ARCH [--weights W] [--shape N,C,H,W]... [--no-strict] --out FILE(.svg|.png|.dot)\n"
    "  train ARCH [--weights W] --train X.npy Y.npy [--val X.npy Y.npy]\n"
    "        --loss cross_entropy|mse|l1|smooth_l1|bce_with_logits --optimizer sgd|adam|adamw\n"
    "        --lr LR [--momentum M] [--nesterov] [--weight-decay D] --epochs E --batch B\n"
    "        [--schedule constant|step|cosine|loss] [--lr-min L] [--lr-max L] [--step-size S]\n"
    "        [--gamma G] [--accumulate K] [--clip-grad-norm X] [--label-smoothing S]\n"
    "        [--no-shuffle] [--seed S] [--resume DIR] [--threads N] [--progress] --out DIR\n"
    "  prune ARCH [--weights W] --method magnitude|l1|l2|slim|gates [--amount A]\n"
    "        [--per-layer|--global] [--shape N,C,H,W]... [--iters N] [--json]\n"
    "        [--finetune [--gradual] --train X.npy Y.npy --epochs E ... (as train)] --out DIR\n";

void print_error_lines(const std::string& message) {
  std::istringstream lines(message);
  std::string line;
  while (std::getline(lines, line)) std::cerr << "nnx: error: " << line << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace nnx::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    (argc < 2 ? std::cerr : std::cout) << kUsageText;
    return argc < 2 ? kUsage : kOk;
  }
  std::string command = argv[1];
  const std::vector<std::string> common = {"--weights", "--shape",     "--threads",
                                           "--device",  "--precision", "--plugin"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  try {
    if (command == "run")
      return run_command(Args(argc, argv, 2, with({"--input", "--out"}), {"--no-strict"}));
    if (command == "info")
      return info_command(Args(argc, argv, 2, with({}), {"--no-strict", "--json"}));
    if (command == "convert")
      return convert_command(Args(argc, argv, 2, with({"--out"}), {"--no-strict"}));
    if (command == "bench")
      return bench_command(Args(
          argc, argv, 2, with({"--batch", "--iters", "--warmup", "--cuda-graph", "--batch-split"}),
          {"--no-strict", "--json", "--profile", "--progress"}));
    if (command == "graph")
      return graph_command(Args(argc, argv, 2, with({"--out"}), {"--no-strict"}));
    if (command == "train")
      return train_command(
          Args(argc, argv, 2,
               with({"--loss", "--optimizer", "--lr", "--momentum", "--weight-decay", "--epochs",
                     "--batch", "--schedule", "--lr-min", "--lr-max", "--step-size", "--gamma",
                     "--accumulate", "--clip-grad-norm", "--label-smoothing", "--seed", "--resume",
                     "--out"}),
               {"--no-strict", "--no-shuffle", "--nesterov", "--sync-bn", "--progress"},
               {"--train", "--val"}));
    if (command == "prune") {
      std::vector<std::string> values = {
          "--method",     "--amount",         "--iters",           "--loss",      "--optimizer",
          "--lr",         "--momentum",       "--weight-decay",    "--epochs",    "--batch",
          "--schedule",   "--lr-min",         "--lr-max",          "--step-size", "--gamma",
          "--accumulate", "--clip-grad-norm", "--label-smoothing", "--seed",      "--out"};
      return prune_command(Args(argc, argv, 2, with(values),
                                {"--no-strict", "--json", "--per-layer", "--global", "--finetune",
                                 "--gradual", "--no-shuffle", "--nesterov", "--progress"},
                                {"--train", "--val"}));
    }
    throw UsageError("unknown command '" + command + "'");
  } catch (const UsageError& e) {
    std::cerr << "nnx: error: " << e.what() << "\n" << kUsageText;
    return kUsage;
  } catch (const nnx::Error& e) {
    print_error_lines(e.message());
    switch (e.kind()) {
      case nnx::ErrorKind::device:
      case nnx::ErrorKind::usage:
        return kFailure;
      default:
        return kBadInput;
    }
  } catch (const std::bad_alloc&) {
    std::cerr << "nnx: error: out of memory\n";
    return kFailure;
  } catch (const std::exception& e) {
    std::cerr << "nnx: error: " << e.what() << "\n";
    return kFailure;
  }
}
