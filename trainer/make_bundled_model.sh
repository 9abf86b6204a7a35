#!/usr/bin/env bash
# Reproduce the bundled default model (models/dustspot-unet) from a clean clone.
#
# Needs: the trainer extra installed (torch, segmentation-models-pytorch, openvino),
# the background photos and the sprite folder below (override with env variables).
# About 5 minutes of tile generation plus MINUTES of training on 2 CPU cores.
# The evaluation photos (Path, Autumn, ColorfulCups, MilkyWay wallpapers) are excluded
# by trainer.synth.load_backgrounds even though their folder is passed.
set -euo pipefail
cd "$(dirname "$0")/.."

WALLPAPERS=${WALLPAPERS:-/work/photos/x/usr/share/wallpapers}
MATE=${MATE:-/work/photos/x/usr/share/backgrounds}
SKIMAGE=${SKIMAGE:-$(python -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))')}
SPRITES=${SPRITES:-../shared/data/film-damage-sprites}
RUN=${RUN:-runs/bundled-v1}
MINUTES=${MINUTES:-95}
VERSION=${VERSION:-0.1.0}
export PYTHONPATH=${PYTHONPATH:-$PWD}

if command -v dustspot >/dev/null 2>&1; then DUSTSPOT=(dustspot); else DUSTSPOT=(python -m shared.cli); fi

# --resume continues an interrupted run from RUN/checkpoint.pt (the pools are reused)
RESUME=()
[ -f "$RUN/checkpoint.pt" ] && RESUME=(--resume)

"${DUSTSPOT[@]}" train "$WALLPAPERS" "$MATE" "$SKIMAGE" \
    --run "$RUN" --sprites "$SPRITES" --size 256 --batch 16 --minutes "$MINUTES" \
    --pool 12000 --valid-pool 512 --threads 2 --workers 2 --seed 0 \
    --checkpoint-minutes 5 --eval-minutes 15 "${RESUME[@]}"

"${DUSTSPOT[@]}" export "$RUN" --registry models --name dustspot-unet --version "$VERSION"
