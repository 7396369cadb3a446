// Learning-rate schedules: step, cosine and the loss rule, one value per epoch.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "nnx/error.h"
#include "nnx/optim.h"

namespace nnx {

ScheduleKind parse_schedule_name(std::string_view name) {
  if (name == "constant" || name == "none") return ScheduleKind::constant;
  if (name == "step") return ScheduleKind::step;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "loss") return ScheduleKind::loss;
  fail(ErrorKind::usage, "unknown schedule '", std::string(name),
       "' (expected constant, step, cosine or loss)");
}

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::constant:
      return "constant";
    case ScheduleKind::step:
      return "step";
    case ScheduleKind::cosine:
      return "cosine";
    case ScheduleKind::loss:
      return "loss";
  }
  return "?";
}

LrSchedule::LrSchedule(ScheduleOptions options) : options_(options), lr_(options.lr) {
  const ScheduleOptions& o = options_;
  const char* name = schedule_name(o.kind);
  NNX_CHECK(o.lr >= 0 && o.lr_min >= 0, ErrorKind::usage, name,
            " schedule: learning rates must be >= 0, found lr ", o.lr, ", lr_min ", o.lr_min);
  if (o.kind == ScheduleKind::step)
    NNX_CHECK(o.step_size > 0 && o.gamma > 0, ErrorKind::usage,
              "step schedule: needs step_size > 0 and gamma > 0, found ", o.step_size, " and ",
              o.gamma);
  if (o.kind == ScheduleKind::cosine)
    NNX_CHECK(o.total_epochs > 0, ErrorKind::usage,
              "cosine schedule: needs total_epochs > 0, found ", o.total_epochs);
  if (o.kind == ScheduleKind::loss) {
    NNX_CHECK(o.lr_min <= o.lr_max, ErrorKind::usage, "loss schedule: lr_min ", o.lr_min,
              " is above lr_max ", o.lr_max);
    lr_ = std::clamp(o.lr, o.lr_min, o.lr_max);
  }
}

double LrSchedule::lr_for_epoch(int epoch) const {
  const ScheduleOptions& o = options_;
  NNX_CHECK(epoch >= 0, ErrorKind::usage, "lr_for_epoch: negative epoch ", epoch);
  switch (o.kind) {
    case ScheduleKind::constant:
      return o.lr;
    case ScheduleKind::step:
      return o.lr * std::pow(o.gamma, double(epoch / o.step_size));
    case ScheduleKind::cosine: {
      double t = double(epoch);  // past T it rises again, as CosineAnnealingLR does
      return o.lr_min +
             0.5 * (o.lr - o.lr_min) * (1 + std::cos(std::numbers::pi * t / o.total_epochs));
    }
    case ScheduleKind::loss:
      return lr_;
  }
  return lr_;
}

double LrSchedule::on_epoch_end(double loss) {
  if (options_.kind == ScheduleKind::loss) {
    if (epoch_ > 0) {
      bool improved = loss < last_loss_;  // false for NaN on either side
      lr_ = std::clamp(improved ? lr_ * 2 : lr_ / 4, options_.lr_min, options_.lr_max);
    }
  }
  last_loss_ = loss;
  ++epoch_;
  if (options_.kind != ScheduleKind::loss) lr_ = lr_for_epoch(epoch_);
  return lr_;
}

void LrSchedule::restore(int epoch, double lr, double last_loss) {
  NNX_CHECK(epoch >= 0 && lr >= 0, ErrorKind::format, "schedule state: invalid epoch ", epoch,
            " or lr ", lr);
  epoch_ = epoch;
  lr_ = lr;
  last_loss_ = last_loss;
}

}  // namespace nnx
