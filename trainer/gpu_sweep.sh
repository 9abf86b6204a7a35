#!/usr/bin/env bash
# Candidate networks trained side by side on one CUDA GPU, from one shared tile pool.
#
# A GPU trains these small UNets far faster than the tile generator can feed them, so the
# pool is built once with every CPU core and then shared (symlinked) by all candidates, which
# train concurrently on the one GPU (each leaves it mostly idle on its own).
#
#   BACKGROUNDS="photos1 photos2" SPRITES=... trainer/gpu_sweep.sh
#
# Candidates: NAME:ENCODER:DECODER:LR[:INIT[:TEACHER[:ARCH[:HARD_POSITIVES]]]], one per line of
# CANDIDATES (TEACHER: weights to distil from, `dustspot train --teacher`; ARCH: `--arch`, unet
# when empty; HARD_POSITIVES: `--hard-positives`, off when empty; INIT and TEACHER may be empty).  Every run gets the
# same training time, fitted to DEADLINE_S (seconds from the start, pool generation included).
# Each run folder ends with model.pt, final.json, metrics.jsonl and metrics.png, as `dustspot
# train` leaves them; OUT (if set) also receives <name>.pt (fp16 weights) and logs.tgz.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BACKGROUNDS:?space-separated background folders}"
SKIMAGE=${SKIMAGE:-$(python3 -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))')}
SPRITES=${SPRITES:-../shared/data/film-damage-sprites}
SWEEP=${SWEEP:-runs/gpu-sweep}
POOL=${POOL:-40000}
SEED=${SEED:-5}
BATCH=${BATCH:-64}
DEADLINE_S=${DEADLINE_S:-540}
RESERVE_S=${RESERVE_S:-100}          # start-up, final evaluation and saving, after the training time
# a candidate still running HARD_S after the start is stopped and saved from its last checkpoint:
# the device tool returns nothing of a command that outruns its limit
HARD_S=${HARD_S:-$((DEADLINE_S + 30))}
WORKERS=${WORKERS:-$(nproc)}
CANDIDATES=${CANDIDATES:-"effb1:efficientnet-b1:128,64,32,16,8:7e-4:trainer/weights/dustspot-unet-0.3.0.pt
mnv3l-32:tu-mobilenetv3_large_100:32,16,16,8,8:2e-3
mnv3l-64:tu-mobilenetv3_large_100:64,32,16,16,8:2e-3"}
export PYTHONPATH=${PYTHONPATH:-$PWD}
START=$(date +%s)
read -r -a BG <<< "$BACKGROUNDS"
BG+=("$SKIMAGE")
# BUSY_SHARE / BUSY_TEXTURE (optional): `dustspot train --busy-share/--busy-texture`, for the
# shared pool and every candidate alike (a candidate whose flags differ would rebuild the pool)
BUSY_SHARE=${BUSY_SHARE:-$(python3 -c 'from trainer import settings; print(settings.BUSY_SHARE)')}
BUSY_TEXTURE=${BUSY_TEXTURE:-$(python3 -c 'from trainer import settings; print(settings.BUSY_TEXTURE)')}
COMMON=(--sprites "$SPRITES" --size 256 --batch "$BATCH" --pool "$POOL" --valid-pool 512 --seed "$SEED"
        --busy-share "$BUSY_SHARE" --busy-texture "$BUSY_TEXTURE")

# 1. the shared pool, with every core (a run folder of its own, so no candidate owns it)
mkdir -p "$SWEEP/pool"
# (python3 -c, not a here-document: spawned generator processes re-import __main__ from a file)
python3 -c '
import sys, time
from trainer import train
run, sprites, pool, seed, workers, busy_share, busy_texture, *bgs = sys.argv[1:]
t = time.time()
train.prepare_pools(run, bgs, sprites, 256, int(pool), 512, int(seed), int(workers),
                    busy_share=float(busy_share), busy_texture=float(busy_texture))
print(f"pool: {pool} tiles in {time.time() - t:.0f} s", flush=True)
' "$SWEEP/pool" "$SPRITES" "$POOL" "$SEED" "$WORKERS" "$BUSY_SHARE" "$BUSY_TEXTURE" "${BG[@]}"

# 2. the candidates, concurrently, for the time that is left
LEFT=$(( DEADLINE_S - ($(date +%s) - START) - RESERVE_S ))
MINUTES=$(python3 -c "print(max(0.5, $LEFT / 60))")
echo "training each candidate for $MINUTES min"
PIDS=()
while IFS=: read -r NAME ENCODER DECODER LR INIT TEACHER ARCH HARD_POSITIVES; do
    [ -n "$NAME" ] || continue
    RUN="$SWEEP/$NAME"
    mkdir -p "$RUN"
    ln -sfn "$(realpath "$SWEEP/pool/pool-train")" "$RUN/pool-train"
    ln -sfn "$(realpath "$SWEEP/pool/pool-valid")" "$RUN/pool-valid"
    EXTRA=()
    [ -n "${INIT:-}" ] && EXTRA+=(--init "$INIT")
    [ -n "${TEACHER:-}" ] && EXTRA+=(--teacher "$TEACHER")
    [ -n "${ARCH:-}" ] && EXTRA+=(--arch "$ARCH")
    [ -n "${HARD_POSITIVES:-}" ] && EXTRA+=(--hard-positives "$HARD_POSITIVES")
    python3 -m shared.cli train "${BG[@]}" --run "$RUN" "${COMMON[@]}" --encoder "$ENCODER" \
        --decoder-channels "$DECODER" --lr "$LR" --minutes "$MINUTES" --threads 3 --workers 1 \
        --device "${DEVICE:-cuda}" --eval-minutes 1000 --checkpoint-minutes 2 "${EXTRA[@]}" < /dev/null > "$RUN/train.log" 2>&1 &
    PIDS+=($!)
done <<< "$CANDIDATES"
running() { local pid; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while running && [ $(( $(date +%s) - START )) -lt "$HARD_S" ]; do sleep 2; done
for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then echo "stopping $pid at the hard limit (${HARD_S} s)"; kill "$pid"; fi
done
STATUS=0
for pid in "${PIDS[@]}"; do wait "$pid" || STATUS=1; done

# 3. results: fp16 weights (the trainer/weights format: model.pt, else the last checkpoint.pt) and the logs
for RUN in "$SWEEP"/*/; do
    tail -n 3 "$RUN/train.log" 2>/dev/null || true
done
if [ -n "${OUT:-}" ]; then
    for RUN in "$SWEEP"/*/; do
        name=$(basename "$RUN")
        if [ "$name" != pool ] && { [ -f "$RUN/model.pt" ] || [ -f "$RUN/checkpoint.pt" ]; }; then
            python3 -m trainer.stages save "$RUN" "$OUT/$name.pt" || STATUS=1
        fi
    done
    tar czf "$OUT/logs.tgz" --exclude='pool*' --exclude='*.pt' -C "$SWEEP" .
fi
exit $STATUS
