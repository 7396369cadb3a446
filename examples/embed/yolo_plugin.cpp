// The seed network's YOLO head as a plugin: loaded by C programs (nnx_load_plugin) and by the
// nnx command (--plugin), which cannot register C++ ops themselves.
#include "nnx/plugin.h"
#include "yolo_head.h"

NNX_PLUGIN(register_ops) {
  example::register_yolo_head();
}
