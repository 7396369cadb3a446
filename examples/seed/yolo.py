"""Reference implementation of the seed example's user op `own_module.YOLO`.

This is the PyTorch definition that the C++ user-op example (registered as
"own_module.YOLO") must reproduce; the test fixtures of the seed network are computed with it.

    YOLO(anchors=[[w, h], ...], cls_fcn=None)

Constructor
    anchors  list of A anchor boxes [w, h], in pixels of the network input (ints or floats).
             A = len(anchors) >= 1.
    cls_fcn  how class scores are activated: None or "sigmoid" (the default: independent
             sigmoids), or "softmax" (a softmax over the C class channels of each anchor).
    The module has no parameters and an empty state dict.

Inputs
    x      the raw head output, (N, A*(5+C), H, W); C = x.shape[1] / A - 5 classes
           (the seed: 15 channels, one anchor -> C = 10). C >= 0 and A must divide the
           channel count, else it is an error.
    image  the network input, (N, *, H_in, W_in): only its height and width are used.

Layout (input and output alike): channel a*(5+C) + k is field k of anchor a, with
    k = 0: x, 1: y, 2: w, 3: h, 4: objectness, 5 .. 5+C-1: class 0 .. C-1.

Output: the same shape and layout, (N, A*(5+C), H, W), float32. With t the raw value at
(n, channel, i, j) (row i, column j), stride_x = W_in / W and stride_y = H_in / H (real
division, in double precision, then used as a float32 factor):
    x   = (sigmoid(t) + j) * stride_x          box centre, input pixels
    y   = (sigmoid(t) + i) * stride_y
    w   = exp(t) * anchor_w                    box size, input pixels
    h   = exp(t) * anchor_h
    obj = sigmoid(t)
    cls = sigmoid(t)                           (cls_fcn None/"sigmoid")
        = softmax over the C class channels of the anchor, per (n, i, j) ("softmax")
Nothing else (no thresholding, no reordering, no non-maximum suppression).
"""
import torch
from torch import nn


class YOLO(nn.Module):
    def __init__(self, anchors, cls_fcn=None):
        super().__init__()
        rows = [list(a) for a in anchors] if isinstance(anchors, (list, tuple)) else None
        if not rows or not all(len(a) == 2 and all(type(v) in (int, float) and v > 0
                                                   for v in a) for a in rows):
            raise ValueError(f"anchors must be a non-empty list of [w, h] pairs, not {anchors!r}")
        if cls_fcn not in (None, "sigmoid", "softmax"):
            raise ValueError(f"cls_fcn must be None, 'sigmoid' or 'softmax', not {cls_fcn!r}")
        self.anchors = [(float(w), float(h)) for w, h in rows]
        self.cls_fcn = cls_fcn

    def extra_repr(self):
        return f"anchors={[list(a) for a in self.anchors]}, cls_fcn={self.cls_fcn!r}"

    def forward(self, x, image):
        n, channels, height, width = x.shape
        a = len(self.anchors)
        if channels % a or channels // a < 5:
            raise ValueError(f"YOLO with {a} anchors needs A*(5+C) input channels, got {channels}")
        fields = channels // a
        stride_x = image.shape[-1] / width
        stride_y = image.shape[-2] / height
        t = x.reshape(n, a, fields, height, width)
        cols = torch.arange(width, dtype=x.dtype, device=x.device).reshape(1, 1, width)
        rows = torch.arange(height, dtype=x.dtype, device=x.device).reshape(1, height, 1)
        anchors = torch.tensor(self.anchors, dtype=x.dtype, device=x.device)  # (A, 2)
        aw = anchors[:, 0].reshape(1, a, 1, 1)
        ah = anchors[:, 1].reshape(1, a, 1, 1)
        bx = (torch.sigmoid(t[:, :, 0]) + cols) * stride_x
        by = (torch.sigmoid(t[:, :, 1]) + rows) * stride_y
        bw = torch.exp(t[:, :, 2]) * aw
        bh = torch.exp(t[:, :, 3]) * ah
        obj = torch.sigmoid(t[:, :, 4])
        cls = t[:, :, 5:]
        cls = torch.softmax(cls, dim=2) if self.cls_fcn == "softmax" else torch.sigmoid(cls)
        boxes = torch.stack([bx, by, bw, bh, obj], dim=2)          # (N, A, 5, H, W)
        return torch.cat([boxes, cls], dim=2).reshape(n, channels, height, width)
