#!/usr/bin/env bash
# Candidate networks trained side by side on one CUDA GPU, from one shared tile pool.
#
# A GPU trains these small UNets far faster than the tile generator can feed them, so one
# pool is generated with the CPU cores and shared (symlinked) by all candidates, which train
# concurrently on the one GPU (each leaves it mostly idle on its own).  The candidates start as
# soon as START_TILES of the pool are written and draw from what is written so far
# (`dustspot train --growing-pool`) while the generator goes on filling it up to POOL tiles or
# until they finish: in session 14 building the pool first took 160 of the 470 s.
#
#   BACKGROUNDS="photos1 photos2" SPRITES=... trainer/gpu_sweep.sh
#
# Candidates: NAME:ENCODER:DECODER:LR[:INIT[:TEACHER[:ARCH[:HARD_POSITIVES]]]], one per line of
# CANDIDATES (TEACHER: weights to distil from, `dustspot train --teacher`; ARCH: `--arch`, unet
# when empty; HARD_POSITIVES: `--hard-positives`, off when empty; INIT and TEACHER may be empty).  Every run gets the
# same training time, fitted to DEADLINE_S (seconds from the start, pool generation included).
# Each run folder ends with model.pt, final.json, metrics.jsonl and metrics.png, as `dustspot
# train` leaves them; OUT (if set) also receives <name>.pt (fp16 weights) and logs.tgz.
# BUSY_SHARE, BUSY_TEXTURE and GENERATOR ("NAME=SHARE ...", `dustspot train --generator`) set the
# shared pool's draw.
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
CANDIDATES=${CANDIDATES:-"effb1:efficientnet-b1:128,64,32,16,8:7e-4:trainer/weights/dustspot-unet-0.3.0.pt
mnv3l-32:tu-mobilenetv3_large_100:32,16,16,8,8:2e-3
mnv3l-64:tu-mobilenetv3_large_100:64,32,16,16,8:2e-3"}
# generator processes: the cores less one per candidate (each feeds the GPU from the CPU)
CANDIDATE_COUNT=$(grep -c . <<< "$CANDIDATES")
WORKERS=${WORKERS:-$(( $(nproc) > CANDIDATE_COUNT + 1 ? $(nproc) - CANDIDATE_COUNT : 1 ))}
START_TILES=${START_TILES:-$(( BATCH * 20 ))}   # written before the candidates start
START_TILES=$(( START_TILES < POOL ? START_TILES : POOL ))
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
# GENERATOR (optional): space-separated NAME=SHARE, `dustspot train --generator` for the shared
# pool's draw (and recorded in every candidate's config)
# (newlines count as spaces, as for the pool's Python side: every line of it, not the first)
read -r -a GENERATOR_SETTINGS <<< "${GENERATOR:+${GENERATOR//$'\n'/ }}"
for setting in "${GENERATOR_SETTINGS[@]}"; do COMMON+=(--generator "$setting"); done

# 1. the shared pool (a run folder of its own, so no candidate owns it): the validation pool,
# then the training pool, in the background, in a process group of its own (setsid) so that
# stopping it stops its generator processes too.  SIGTERM exits through the Pool's context
# manager, which terminates them as well.
mkdir -p "$SWEEP/pool"
rm -f "$SWEEP/pool/pool-train/ready"
# (python3 -c, not a here-document: spawned generator processes re-import __main__ from a file)
setsid python3 -c '
import signal, sys, time
from trainer import train
signal.signal(signal.SIGTERM, lambda *_: (signal.signal(signal.SIGTERM, signal.SIG_IGN), sys.exit(143)))
from trainer.synth import generator_setting
run, sprites, pool, seed, workers, busy_share, busy_texture, generator, *bgs = sys.argv[1:]
t = time.time()
train.prepare_pools(run, bgs, sprites, 256, int(pool), 512, int(seed), int(workers),
                    busy_share=float(busy_share), busy_texture=float(busy_texture),
                    generator=dict(generator_setting(s) for s in generator.split()))
print(f"pool: {pool} tiles in {time.time() - t:.0f} s", flush=True)
' "$SWEEP/pool" "$SPRITES" "$POOL" "$SEED" "$WORKERS" "$BUSY_SHARE" "$BUSY_TEXTURE" "${GENERATOR:-}" "${BG[@]}" &
FILLER=$!
FILLER_STOPPED=
stop_filler() { [ -n "$FILLER_STOPPED" ] || kill -TERM -- "-$FILLER" 2>/dev/null || true; FILLER_STOPPED=1; }
trap stop_filler EXIT
ready() { cat "$SWEEP/pool/pool-train/ready" 2>/dev/null || echo 0; }
until [ "$(ready)" -ge "$START_TILES" ]; do
    kill -0 "$FILLER" 2>/dev/null || { wait "$FILLER" || true; [ "$(ready)" -ge "$START_TILES" ] && break;
                                       echo "the pool generator stopped at $(ready) tiles"; exit 1; }
    sleep 1
done
echo "pool: $(ready) tiles written after $(( $(date +%s) - START )) s; the candidates start"

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
        --device "${DEVICE:-cuda}" --eval-minutes 1000 --checkpoint-minutes 2 --growing-pool "${EXTRA[@]}" < /dev/null > "$RUN/train.log" 2>&1 &
    PIDS+=($!)
done <<< "$CANDIDATES"
running() { local pid; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
# (each candidate's clock starts after its start-up, ~30 s with CUDA's, and leaves out evaluations)
TRAIN_END=$(( $(date +%s) + 30 + $(python3 -c "print(int($MINUTES * 60))") ))
while running && [ $(( $(date +%s) - START )) -lt "$HARD_S" ]; do
    # the training time is over: the last evaluations and saves get the cores to themselves
    if [ -z "$FILLER_STOPPED" ] && [ "$(date +%s)" -ge "$TRAIN_END" ]; then
        echo "pool: $(ready) of $POOL tiles written when the training time ended"; stop_filler
    fi
    sleep 2
done
for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then echo "stopping $pid at the hard limit (${HARD_S} s)"; kill "$pid"; fi
done
STATUS=0
for pid in "${PIDS[@]}"; do wait "$pid" || STATUS=1; done
[ -n "$FILLER_STOPPED" ] || echo "pool: $(ready) of $POOL tiles written when the candidates stopped"
stop_filler

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
