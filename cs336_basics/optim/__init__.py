"""Optimizers, learning-rate schedules and gradient clipping, on core tensor ops.

adamw.py    AdamW (foreach, cache-sized CPU slices)
sgd.py      the handout's SGD with a decaying step
schedules.py  warmup + cosine
clipping.py   global-norm gradient clipping
"""

from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.clipping import clip_gradients
from cs336_basics.optim.schedules import get_lr_cosine_schedule
from cs336_basics.optim.sgd import SGD

__all__ = ["SGD", "AdamW", "clip_gradients", "get_lr_cosine_schedule"]
