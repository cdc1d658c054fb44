"""Dice + cross-entropy: cross-entropy for calibrated voxels, Dice for the small foreground."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Mean soft Dice loss over the foreground classes plus cross-entropy.

    ``logits`` (B, C, Z, Y, X), ``target`` (B, Z, Y, X) integer class indices. Dice is computed
    over the whole batch ("batch Dice"), so a crop without one of the classes (a cut field of
    view) is no division by zero and still pushes that class's probabilities down.
    """
    target = target.long()
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(probs.dtype)
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce_weight * ce + dice_weight * (1.0 - dice[1:].mean())
