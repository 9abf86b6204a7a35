"""Every default setting of dustspot, in one place.

Entry points (CLI flags, environment variables, the job payload) override these;
nothing else in the code base hard-codes a tunable value.
"""
import math
import os

# --- pipeline -----------------------------------------------------------------
# Working resolution: "size" (long side N, aspect kept), "square" (N x N, the seed's
# geometry) or "native" (no resize).  A model's manifest may recommend its own
# working size (infer at the scale you trained); these apply when it does not.
MODES = ("size", "square", "native")
MODE = "size"
WORKING_SIZE = 2016
TILE = 512
OVERLAP = 64
# Pixels at each tile edge given no weight when blending: a convolution near a tile
# edge sees zero padding instead of image, so its output there is the least reliable.
TILE_MARGIN = 16
THRESHOLD = 0.5
MIN_SPOT_AREA = 1            # native pixels; smaller components are dropped
# Spot extent from the scan (shared/trim.py): a spot keeps the pixels whose contrast against
# the clean ring TRIM_RING px around it is at least TRIM of the strongest within TRIM_RADIUS px
# (0: off, the thresholded probabilities alone). Chosen on the held-out frames v11 with 0.4.1
# (pixel Dice 0.631 -> 0.710, a flat optimum: 0.35-0.55 and radius 2-8 within 0.02).
TRIM = 0.45
TRIM_RADIUS = 4              # native px
TRIM_RING = (2, 5)           # native px: inner and outer radius of the ring around a spot
TRIM_MAX_AREA = 100_000      # native px: larger spots are left untrimmed (rejoining pieces costs per pixel)
# Spot colour (shared/neutral.py): dust blends the scene towards a grey, so a spot whose colour
# departs from every such blend of its surroundings by more than NEUTRAL levels (of 255) and
# NEUTRAL_SHARE of its luma contrast is the scene's own (0: off). Chosen on frames v11 / v12.
NEUTRAL = 10.0
NEUTRAL_SHARE = 0.15
NEUTRAL_MAX_BOX = 4_000_000  # native px of a spot's bounding box; larger spots are kept untested (memory)
BATCH = 1                    # tiles per request; parallelism comes from several requests in flight
MAX_TILE = 4096              # largest tile a job or flag may ask for

# --- image input ----------------------------------------------------------------
MAX_PIXELS = 300_000_000     # refused from the header, before decoding
MAX_WORKING_SIZE = math.isqrt(MAX_PIXELS)   # a working image may not exceed the pixel limit either
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

# --- outputs ---------------------------------------------------------------------
OVERLAY_LONG_SIDE = 1600     # overlay preview size
PNG_COMPRESSION = 1          # masks are mostly zeros: level 1 is small and fast

# --- inference engine --------------------------------------------------------------
DEVICE = "CPU"
PRECISION = None             # None: the device's best (bf16 on AVX-512 BF16 CPUs)
THREADS = None               # None: all cores
STREAMS = None               # None: OpenVINO chooses
MAX_SESSIONS = 2             # compiled models a worker keeps (least recently used goes): each is 100s of MB
WORKER_STOP_GRACE_S = 600    # SIGTERM to SIGKILL: a scan in progress finishes (worker.fleet, deploy/)

# --- models ------------------------------------------------------------------------
BUNDLED_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
MODEL = "dustspot-unet"      # name in the registry; resolves through its `latest` pointer


def models_root() -> str:
    return os.environ.get("DUSTSPOT_MODELS", BUNDLED_MODELS)


# --- queue ---------------------------------------------------------------------------
REDIS_URL = "redis://localhost:6379/0"


def redis_url() -> str:
    return os.environ.get("REDIS_URL", REDIS_URL)
