"""Defaults of training and export that command-line flags show (torch-free, cheap to import).

trainer.train and trainer.model read their defaults from here, so `dustspot --help` never
has to import torch to print them.
"""
# --- network (trainer.model) -----------------------------------------------------------
ARCH = "unet"
ENCODER = "efficientnet-b1"
# A light decoder: dust is tiny and local; the probe (DESIGN.md) used 128-64-32-16-8.
DECODER_CHANNELS = (128, 64, 32, 16, 8)

# --- training (trainer.train) ----------------------------------------------------------
TILE = 256
BATCH = 16
LR = 2e-3
POOL = 12000                 # training tiles generated once, then trained over with flips/rotations
VALID_POOL = 512             # tiles from validation-only backgrounds
CHECKPOINT_MINUTES = 5.0
EVAL_MINUTES = 15.0
THREADS = 2
WORKERS = 2                  # processes generating the pools
SEED = 0
DISTILL_WEIGHT = 10.0        # --teacher: weight of the BCE against its probabilities (= the label BCE's)
