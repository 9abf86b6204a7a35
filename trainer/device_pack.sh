#!/usr/bin/env bash
# Get a GPU training run ready for the lent device machine (the session tool `run`), which reaches
# no package registry and takes at most 64 MiB: the tracked files, the untracked ones git does not
# ignore, and the ignored paths named in `carry`.  This repository's bundled models and stage
# weights alone are ~175 MB, so they must stay behind; the run needs one weights file of them.
#
#   trainer/device_pack.sh pack      # runs/device: photo and sprite copies, wheels, 0.4.0's and the student's weights
#   trainer/device_pack.sh hide      # untrack models/, trainer/weights/, examples/ (index only)
#   (session tool) run command="bash trainer/device_run.sh" carry=["runs/device"] timeout_s=570 ($OUT: set by the tool)
#   trainer/device_pack.sh restore   # track them again, exactly as HEAD has them
#
# `hide` stages their removal from the index and ignores them (.git/info/exclude), so the tool
# sends neither; the files stay on disk.  Commit nothing between hide and restore.  `pack` prints
# the bytes that will travel: at most 64 MiB (67,108,864) or the call is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

PACK=${PACK:-runs/device}
WALLPAPERS=${WALLPAPERS:-/work/photos/x/usr/share/wallpapers}
MATE=${MATE:-/work/photos/x/usr/share/backgrounds}
MORE=${MORE:-/work/photos2/x/usr/share/backgrounds}
SPRITES=${SPRITES:-../shared/data/film-damage-sprites}
TEACHER=${TEACHER:-trainer/weights/dustspot-unet-0.4.0.pt}
# the MobileNetV4-Conv-Small student trained on 2 CPU cores in session 10: the GPU run goes on from it
STUDENT=${STUDENT:-trainer/weights/dustspot-slim-mnv4s-cpu.pt}
QUALITY=${QUALITY:-82}      # JPEG quality of the photo copies: 88 left no room for the student
HIDDEN=(models trainer/weights examples)
EXCLUDE=.git/info/exclude
MARK="# trainer/device_pack.sh hide"
LIMIT=67108864
PY=${PY:-$(command -v python || command -v python3)}

travelling_bytes() {
    # what the tool sends: tracked + untracked-not-ignored files, and the carried folder
    { git ls-files -z --cached; git ls-files -z --others --exclude-standard; } \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

case "${1:-}" in
pack)
    rm -rf "$PACK"
    mkdir -p "$PACK/wheels"
    # photos at 2048 px (the scale the tiles see) and the sprites' alpha alone
    # (trainer/shrink_inputs.py); one folder per source keeps their names apart
    # (-> $PACK/wallpapers/bg/wallpapers, $PACK/mate/bg/backgrounds, $PACK/more/bg/backgrounds,
    # $PACK/sprites: what trainer/device_run.sh reads)
    "$PY" -m trainer.shrink_inputs "$PACK/wallpapers" "$WALLPAPERS" --quality "$QUALITY"
    "$PY" -m trainer.shrink_inputs "$PACK/mate" "$MATE" --quality "$QUALITY"
    if [ -d "$MORE" ]; then "$PY" -m trainer.shrink_inputs "$PACK/more" "$MORE" --quality "$QUALITY"; fi
    "$PY" -m trainer.shrink_inputs "$PACK" --sprites "$SPRITES"
    cp "$TEACHER" "$PACK/"
    if [ -f "$STUDENT" ]; then cp "$STUDENT" "$PACK/student.pt"; fi
    # pure-Python packages the device image lacks (its torch, timm, opencv, scikit-image serve)
    "$PY" -m pip download -q --no-deps -d "$PACK/wheels" \
        "segmentation-models-pytorch==$("$PY" -c 'import segmentation_models_pytorch as m; print(m.__version__)')" \
        "torch-pruning==$("$PY" -c 'from importlib.metadata import version; print(version("torch-pruning"))')"
    carried=$(du -sb "$PACK" | cut -f1)
    tree=$(travelling_bytes)
    hidden=$(git ls-files -z -- "${HIDDEN[@]}" | xargs -0 -r stat -c %s -- | awk '{s += $1} END {print s + 0}')
    if git ls-files --error-unmatch models >/dev/null 2>&1; then tree=$((tree - hidden)); fi
    total=$((tree + carried))
    echo "runs/device: $carried bytes; working tree without ${HIDDEN[*]}: $tree; together $total of $LIMIT"
    [ "$total" -le "$LIMIT" ] || { echo "too large for the device machine" >&2; exit 1; }
    ;;
hide)
    if ! git diff --cached --quiet; then
        echo "the index holds staged changes: commit or unstage them first" >&2; exit 1
    fi
    git rm -r -q --cached -- "${HIDDEN[@]}"
    { echo "$MARK"; for p in "${HIDDEN[@]}"; do echo "/$p/"; done; } >> "$EXCLUDE"
    echo "hidden: ${HIDDEN[*]} (now $(travelling_bytes) bytes + the carried $PACK); restore after the run"
    ;;
restore)
    git reset -q -- "${HIDDEN[@]}"
    if grep -qF "$MARK" "$EXCLUDE"; then
        # drop the marker and the lines hide appended after it
        "$PY" - "$EXCLUDE" "$MARK" "${HIDDEN[@]}" <<'EOF'
import sys
path, mark, *hidden = sys.argv[1:]
drop = {mark} | {f"/{p}/" for p in hidden}
lines = open(path).read().splitlines()
open(path, "w").write("".join(line + "\n" for line in lines if line not in drop))
EOF
    fi
    git status --short -- "${HIDDEN[@]}" | head -3
    echo "restored: ${HIDDEN[*]} are tracked again"
    ;;
*)
    sed -n '2,15p' "$0"; exit 2 ;;
esac
