"""The fraud MLP, and the scoring module that is logged to MLflow (standardisation + MLP + sigmoid, TorchScript).

The MLP is a stack of `Block`s so FSDP2 can shard block by block (each block its own all-gather unit).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = nn.LayerNorm(d_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x)))


class FraudMLP(nn.Module):
    """Logits of P(fraud | features), shape [batch, 1] (a fresh tensor, not a view: FSDP2 hooks the output)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (128, 128, 64)) -> None:
        super().__init__()
        dims = (n_features, *hidden)
        self.blocks = nn.ModuleList(Block(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class FraudScorer(nn.Module):
    """What serving loads: raw feature columns in, fraud probability out (shape [batch, 1])."""

    def __init__(self, mlp: FraudMLP, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
        x = (torch.sign(x) * torch.log1p(torch.abs(x)) - self.mean) / self.std  # as data.time_split
        return torch.sigmoid(self.mlp(x))
