"""Semantic encoders: DiffAE's half-UNet and a U-Net, pooling either the last features or every level."""
from __future__ import annotations

import torch
from torch import nn

from .nn import PoolHead, ResBlock, build_input_blocks, build_middle_block, build_output_blocks


class HalfUNetEncoder(nn.Module):
    """DiffAE's encoder (down path + middle); ``hierarchical`` pools every level into its own code.

    Codes come out as [B, L, D], index 0 from the finest features. With ``hierarchical=False``
    the head is named ``out`` as in DiffAE so its checkpoints load one-to-one.
    """

    def __init__(self, image_size, in_channels, model_channels, channel_mult, num_res_blocks,
                 attention_resolutions, num_heads, dropout, out_dim, hierarchical=False):
        super().__init__()
        self.hierarchical = hierarchical
        self.input_blocks, skip, ch = build_input_blocks(
            in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
            image_size, num_heads, dropout, emb_channels=None, cond_channels=None,
        )
        self.middle_block = build_middle_block(ch, num_heads, dropout, None, None, len(channel_mult) - 1)
        if hierarchical:
            # level l is read just before its downsampler; the coarsest after the middle block
            level_channels = [s[-1] for s in skip[:-1]] + [ch]
            self.heads = nn.ModuleList(PoolHead(c, out_dim) for c in level_channels)
        else:
            self.out = PoolHead(ch, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        h = x
        for block in self.input_blocks:
            if isinstance(block[0], ResBlock) and block[0].down:
                feats.append(h)
            h = block(h)
        h = self.middle_block(h)
        if not self.hierarchical:
            return self.out(h)[:, None]
        feats.append(h)
        return torch.stack([head(f) for head, f in zip(self.heads, feats)], dim=1)


class UNetEncoder(nn.Module):
    """A U-Net encoder (no time input) pooling its up path: every level, or only the full-resolution output."""

    def __init__(self, image_size, in_channels, model_channels, channel_mult, num_res_blocks,
                 attention_resolutions, num_heads, dropout, out_dim, hierarchical=False):
        super().__init__()
        self.hierarchical = hierarchical
        args = dict(num_heads=num_heads, dropout=dropout, emb_channels=None, cond_channels=None)
        self.input_blocks, skip, ch = build_input_blocks(
            in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
            image_size, **args,
        )
        self.middle_block = build_middle_block(ch, num_heads, dropout, None, None, len(channel_mult) - 1)
        self.output_blocks, ch = build_output_blocks(
            ch, skip, model_channels, channel_mult, num_res_blocks, attention_resolutions,
            image_size, **args,
        )
        if hierarchical:
            level_channels = [int(model_channels * m) for m in channel_mult]
            self.heads = nn.ModuleList(PoolHead(c, out_dim) for c in level_channels)
        else:
            self.out = PoolHead(ch, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h)
            hs.append(h)
        h = self.middle_block(h)
        feats = {}
        for block in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                if isinstance(layer, ResBlock) and layer.up:
                    feats[layer.level] = h  # the level's features, before upsampling
                h = layer(h)
        feats[0] = h
        if not self.hierarchical:
            return self.out(h)[:, None]
        return torch.stack([head(feats[l]) for l, head in enumerate(self.heads)], dim=1)
