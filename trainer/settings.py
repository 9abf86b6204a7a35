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
# --hard-positives: weight of the mean BCE of the hardest HARD_POSITIVE_FRACTION of the dust
# pixels, the mirror of the hard-negative term (trainer.train.hard_positive_bce). 0: off, as
# every model up to 0.4.1 trained (session 15's experiment: trainer/README.md).
HARD_POSITIVE_WEIGHT = 0.0
HARD_POSITIVE_FRACTION = 0.25
DISTILL_WEIGHT = 10.0        # --teacher: weight of the BCE against its probabilities (= the label BCE's)
# Busy scenes (foliage, gravel: synth.scene_texture >= BUSY_TEXTURE) are where the networks
# miss most: dustspot-unet 0.4.0 finds 10 % of synthetic dust on them against 66 % on smooth
# ones, yet they are ~5 % of the photos. BUSY_SHARE of the training tile chunks are cut from
# them, on top of their share of the uniform draw (validation pools: uniform only).
BUSY_TEXTURE = 6.0
BUSY_SHARE = 0.25

# --- pruning (trainer.prune) -------------------------------------------------------------
PRUNE_RATIO = 0.5            # share of every prunable channel group removed
# Kept channel counts are multiples of this where torch-pruning can round them: 16 fits AMX bf16
# tiles (0.4.0 at ratio 0.5: 5.35 ms per 224 tile against 5.96 ms with 8; trainer/README.md).
PRUNE_ROUND_TO = 16

# --- export (trainer.export) -------------------------------------------------------------
# Working sizes (long side) that `export --frames` tries on the held-out frames; the best by the
# tuning objective becomes the model's recommended working size. 0.4.0 on 15 held-out frames
# (session 7): object recall 0.388 at 2016, 0.408 at 2200, 0.421 at 2400, 0.413 at 2600, 0.387 at
# 2800 (each with its own tuned thresholds; 2800 and the frames' native 3300 need stricter spot
# thresholds to keep <= 2 false spots / MP on the clean frames).
EXPORT_WORKING_SIZES = (2016, 2200, 2400, 2600)
