/* NNX_API marks what the library exports: the public C++ classes and functions of include/nnx/
   and the C API. Everything else is compiled with hidden visibility, so that the shared library
   exposes the public API only. Plain C: included by the C API header too. */
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define NNX_API __attribute__((visibility("default")))
#else
#define NNX_API
#endif
