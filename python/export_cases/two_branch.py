"""A user-file model for nnx-export's tests: everything torchvision's models do not show.

- two inputs and two outputs;
- functional calls (F.relu, F.adaptive_avg_pool2d, torch.flatten, torch.cat, F.hardswish);
- one module (`shared`, a Conv2d with weights) called twice: one layer at two nodes;
- chunk + unpacking, a layer-scale parameter used directly, scalar arithmetic on both sides;
- a channels-last block: permute, LayerNorm, Linear, GELU, permute back (ConvNeXt's);
- transpose, view with -1, mean over dims, a StochasticDepth.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth


class TwoBranch(nn.Module):
    def __init__(self, channels=16):
        super().__init__()
        c = channels
        self.stem_a = nn.Conv2d(3, c, 3, padding=1)
        self.stem_b = nn.Conv2d(2, c, 1)
        self.bn = nn.BatchNorm2d(c)
        self.shared = nn.Conv2d(c, c, 3, padding=1, groups=4)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1 = nn.Linear(c, 2 * c)
        self.fc2 = nn.Linear(2 * c, c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) * 0.5 + 0.25)
        self.drop_path = StochasticDepth(0.1, "row")
        self.head = nn.Linear(c, 10)

    def forward(self, x, y):
        a = F.relu(self.bn(self.stem_a(x)))
        b = F.adaptive_avg_pool2d(self.stem_b(y), a.shape[-2:])
        a = self.shared(a) + b                     # the shared module, first call
        b = self.shared(b * 0.5 - 1.0)             # and second; scalar arithmetic
        left, right = torch.chunk(a, 2, dim=1)
        mixed = torch.cat([right, 2.0 + left], dim=1)
        # ConvNeXt's channels-last block with a layer scale
        t = mixed.permute(0, 2, 3, 1)
        t = self.fc2(F.gelu(self.fc1(self.norm(t))))
        t = t.permute(0, 3, 1, 2)
        mixed = mixed + self.drop_path(self.gamma * t)
        # a channel shuffle, as ShuffleNet writes it
        n, c, h, w = mixed.size()
        shuffled = mixed.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        pooled = torch.flatten(F.adaptive_avg_pool2d(F.hardswish(shuffled), 1), 1)
        logits = self.head(pooled)
        second = b.mean((2, 3), keepdim=True) / 4.0 + shuffled
        return logits, second


def build():
    return TwoBranch()
