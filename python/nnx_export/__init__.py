"""nnx-export: a PyTorch model -> the nnx model description (NAME.json + NAME.pth).

    from nnx_export import export
    result = export(model, [(1, 3, 224, 224)], "out/resnet18", verify=True)

The model is traced with torch.fx (tracing.py), every call is mapped to a layer of the
description format (mapping.py, handlers.py), and the files are written exactly as the C++
writer writes them (writing.py). Calls that cannot be mapped are collected and raised
together as one ExportError, one line each with its source location. With `verify`, the
files are run through the C++ runtime and compared with the module's own outputs
(verify.py) before they are put in place.
"""
# The API is imported on first use, so that `python -m nnx_export` can answer usage errors
# (and report a Python without torch) without importing torch first.
__all__ = ["export", "describe", "load_model", "example_inputs", "flatten_outputs",
           "ExportError", "ExportResult", "TOLERANCE"]


def __getattr__(name):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'nnx_export' has no attribute '{name}'")
