"""Optimizers, learning-rate schedules and gradient clipping, on core tensor ops.

adamw.py      AdamW (foreach, cache-sized CPU slices); `adamw_update` is its step
muon.py       Muon for hidden matrices + AdamW for the rest; `group_parameters(model)`
sgd.py        the handout's SGD with a decaying step
schedules.py  warmup + cosine; warmup-stable-decay (WSD)
clipping.py   global-norm gradient clipping
"""

from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.clipping import clip_gradients
from cs336_basics.optim.muon import Muon, group_parameters
from cs336_basics.optim.schedules import get_lr_cosine_schedule, get_lr_wsd_schedule
from cs336_basics.optim.sgd import SGD

__all__ = [
    "SGD",
    "AdamW",
    "Muon",
    "clip_gradients",
    "get_lr_cosine_schedule",
    "get_lr_wsd_schedule",
    "group_parameters",
]
