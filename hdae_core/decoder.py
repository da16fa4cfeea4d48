"""The conditional UNet ε_θ(x_t, t, codes); it knows nothing of noise schedules."""
from __future__ import annotations

import torch
from torch import nn

from .cpu_ops import gn_silu
from .nn import (ResBlock, build_input_blocks, build_middle_block, build_output_blocks, normalization,
                 timestep_embedding, zero_module)


class Decoder(nn.Module):
    """DiffAE's UNet with AdaGN; each ResBlock reads ``codes[:, block.level]`` (or the one shared code).

    Parameter names equal DiffAE's ``BeatGANsAutoencModel`` minus its ``encoder.`` and with
    ``time_embed.time_embed.*`` as ``time_embed.*``.
    """

    def __init__(self, image_size, in_channels, model_channels, channel_mult, num_res_blocks,
                 attention_resolutions, num_heads, dropout, embed_channels, cond_channels):
        super().__init__()
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, embed_channels), nn.SiLU(), nn.Linear(embed_channels, embed_channels)
        )
        args = dict(num_heads=num_heads, dropout=dropout, emb_channels=embed_channels, cond_channels=cond_channels)
        self.input_blocks, skip, ch = build_input_blocks(
            in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions, image_size, **args
        )
        self.middle_block = build_middle_block(ch, level=len(channel_mult) - 1, **args)
        self.output_blocks, ch = build_output_blocks(
            ch, skip, model_channels, channel_mult, num_res_blocks, attention_resolutions, image_size, **args
        )
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, in_channels, 3, padding=1))
        )
        # each ResBlock's place in ``code_scales``' list, in the order the forward pass meets them
        self._res_blocks = [layer for seq in (*self.input_blocks, self.middle_block, *self.output_blocks)
                            for layer in seq if isinstance(layer, ResBlock)]
        for i, layer in enumerate(self._res_blocks):
            layer.scale_index = i

    def code_scales(self, codes: torch.Tensor) -> list[torch.Tensor | None]:
        """Every ResBlock's code scale 1 + z_s for ``codes`` [B, L, D], by its ``scale_index``; they do not depend
        on t, so a sampler computes them once per run and passes them to ``forward`` as ``code_scales``."""
        return [layer.code_scale(codes[:, layer.level if codes.shape[1] > 1 else 0]) for layer in self._res_blocks]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, codes: torch.Tensor,
                code_scales: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """ε prediction; ``t`` are integer timesteps of the full schedule, ``codes`` is [B, L, D];
        ``code_scales`` (from ``code_scales(codes)``) skips recomputing the code projections."""
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        hs = []
        h = x_t
        for block in self.input_blocks:
            h = block(h, emb, codes, code_scales)
            hs.append(h)
        h = self.middle_block(h, emb, codes, code_scales)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, codes, code_scales)
        return self.out[2](gn_silu(self.out[0], h))
