"""Turning the MODEL argument into a torch.nn.Module.

- `package.module:factory` (`torchvision.models:resnet18`): the module is imported and the
  factory (a function or class) called without arguments;
- `path/to/file.py:ClassOrFactory`: the file is imported by path, then the same;
- `path/to/model.pth` (or `.pt`): a whole model saved with `torch.save(model, path)`.
"""
import importlib
import importlib.util
import os
import sys

import torch

from .tracing import ExportError


def _from_file(path):
    name = "nnx_export_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ExportError(f"{path}: cannot import this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)          # the file's own imports of its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def load_model(spec):
    """The module MODEL names, in eval mode. Raises ExportError (exit 1) when it cannot."""
    if os.path.isfile(spec) and not spec.endswith(".py"):
        try:
            model = torch.load(spec, map_location="cpu")
        except Exception as e:
            raise ExportError(f"{spec}: cannot load a model saved with torch.save: "
                              f"{type(e).__name__}: {e}") from None
        return _as_module(model, spec)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ExportError(f"'{spec}': MODEL must be package.module:factory, "
                          f"path/to/file.py:ClassOrFactory or a file saved with torch.save")
    try:
        if where.endswith(".py") or os.path.sep in where:
            if not os.path.isfile(where):
                raise ExportError(f"{where}: no such file")
            module = _from_file(where)
        else:
            module = importlib.import_module(where)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{where}: cannot import: {type(e).__name__}: {e}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ExportError(f"{where}: has no '{attr}'")
        factory = getattr(factory, part)
    if isinstance(factory, torch.nn.Module):
        return _as_module(factory, spec)
    if not callable(factory):
        raise ExportError(f"{spec}: '{attr}' is neither a module nor callable")
    try:
        model = factory()
    except Exception as e:
        raise ExportError(f"{spec}: calling {attr}() failed: {type(e).__name__}: {e}") from None
    return _as_module(model, spec)


def _as_module(model, spec):
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{spec}: gives a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
