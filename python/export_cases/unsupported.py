"""A model nnx-export must refuse, naming each call it cannot map with its source line.

The calls the runtime has no op for are marked `# unsupported` (tests look for those lines);
everything else maps.
"""
import torch
from torch import nn


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.roll(x, shifts=1, dims=2)  # unsupported
        y = self.pixel_shuffle(x)  # unsupported
        z = x / (x.abs() + 1.0)  # unsupported
        return x[:, :4] + z[:, 4:], y  # unsupported
