"""A user-file model for the fused inverted-residual blocks (graph/fusion.h): MobileNetV2's
block in every variant the CPU kernel takes, on planes large enough to be computed in several
bands of rows per thread and small enough to be split over channels instead.

- blocks without expansion (depthwise, then projection), on a large and a small plane;
- stride 2, a 5x5 kernel, a dilated kernel, an even kernel with padding='same' (more padding
  after than before), a depthwise convolution with no activation after it;
- residual Adds, one followed by an activation that is no clamp (SiLU);
- ReLU and ReLU6, a batch of two, odd plane sizes.
"""
import warnings

from torch import nn

# PyTorch notes that it pads a copy for the even kernel with padding="same": that is the point.
warnings.filterwarnings("ignore", message="Using padding=.same. with even kernel")


class Block(nn.Module):
    def __init__(self, cin, cout, expand, stride=1, kernel=3, dilation=1, padding=None,
                 act=nn.ReLU6, dw_act=True, residual=False, after=None):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        if padding is None:
            padding = (kernel - 1) // 2 * dilation
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, padding, dilation=dilation,
                             groups=hidden, bias=False), nn.BatchNorm2d(hidden)]
        if dw_act:
            layers.append(act())
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = residual
        self.after = after() if after is not None else None

    def forward(self, x):
        y = self.body(x)
        if self.residual:
            y = x + y
        if self.after is not None:
            y = self.after(y)
        return y


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(
            Block(32, 16, 1),                                   # no expansion, 70x66
            Block(16, 24, 6, stride=2),                         # -> 35x33
            Block(24, 24, 6, kernel=5, act=nn.ReLU, residual=True),
            Block(24, 24, 3, dilation=2, residual=True, after=nn.SiLU),
            Block(24, 24, 2, kernel=4, padding="same", residual=True),
            Block(24, 32, 4, stride=2),                         # -> 18x17
            Block(32, 40, 6, stride=2),                         # -> 9x9: split over channels
            Block(40, 40, 6, residual=True),
            Block(40, 40, 3, dw_act=False, residual=True),
            Block(40, 48, 1),                                   # no expansion on a small plane
        )

    def forward(self, x):
        return self.blocks(self.stem(x))
