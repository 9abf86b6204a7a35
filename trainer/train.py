"""Training loop: synthetic tile pools -> DustNet, checkpointed, resumable, time-budgeted."""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import DustspotError

from . import context_probe, data, settings, synth, validate
from . import model as models

# --- defaults (the ones flags show live in trainer.settings) ------------------------------
TILE, BATCH, LR = settings.TILE, settings.BATCH, settings.LR
POOL, VALID_POOL = settings.POOL, settings.VALID_POOL
CHECKPOINT_MINUTES, EVAL_MINUTES = settings.CHECKPOINT_MINUTES, settings.EVAL_MINUTES
THREADS, WORKERS, SEED = settings.THREADS, settings.WORKERS, settings.SEED
WEIGHT_DECAY = 1e-4
WARMUP_STEPS = 150
MIN_LR_FRACTION = 0.02
BCE_WEIGHT = 10.0            # sparse targets: BCE keeps every pixel honest, Dice keeps tiny objects
POS_WEIGHT = 1.0
HARD_NEGATIVE_FRACTION = 0.002   # ~130 px of a 256x256 tile: about the false-positive pixels of one tile
HARD_NEGATIVE_WEIGHT = 0.2
HARD_POSITIVE_WEIGHT, HARD_POSITIVE_FRACTION = settings.HARD_POSITIVE_WEIGHT, settings.HARD_POSITIVE_FRACTION
LOG_STEPS = 25
GROWING_POOL_WAIT_S = 600    # --growing-pool: how long to wait for the first batch's tiles
GROWING_POOL_REFRESH_STEPS = 10   # ... and how often to look for more
REAL_FRACTION = 0.5          # share of each batch drawn from labelled tiles, when there are any
# Distillation (--teacher): BCE of the student's logits against the teacher's probabilities on
# every pixel (don't-care ones included: the teacher has an opinion there), at the weight of the
# hard-label BCE. Soft targets carry what the teacher learned about faint and ambiguous dust
# (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network").
DISTILL_WEIGHT = settings.DISTILL_WEIGHT


class TrainError(DustspotError, ValueError):
    """A training run that cannot start: names the flag or file and why (`dustspot train`
    prints it without a traceback; a ValueError for callers that catch those)."""


def dice_loss(logits, target, care, eps=1.0):
    p = torch.sigmoid(logits) * care
    inter = (p * target).sum()
    return 1 - (2 * inter + eps) / (p.sum() + target.sum() + eps)


def _hardest_mean(losses, fraction, logits):
    """Mean of the largest `fraction` of `losses` (at least one); 0, still in the graph, when empty."""
    if losses.numel() == 0:
        return logits.sum() * 0
    k = max(1, int(losses.numel() * fraction))
    return torch.topk(losses, k, sorted=False).values.mean()


def hard_negative_bce(logits, target, care, fraction=HARD_NEGATIVE_FRACTION):
    """Mean BCE of the hardest `fraction` of background pixels (online hard-example mining,
    Shrivastava et al. 2016): stars, glints and texture are a tiny share of all background
    pixels, so plain BCE averages them away."""
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    # pixels within 3 px of dust are soft edges, not hard negatives; don't-care pixels are neither
    near_dust = F.max_pool2d(torch.maximum(target, 1 - care), 7, stride=1, padding=3)
    return _hardest_mean(neg[near_dust < 0.5], fraction, logits)


def hard_positive_bce(logits, target, care, fraction=HARD_POSITIVE_FRACTION):
    """Mean BCE of the hardest `fraction` of the dust pixels: the mirror of hard_negative_bce.
    Mining negatives alone makes dust that resembles the scene around it (a dark speck among
    sharp branches) cheaper to give up than to find: every model up to 0.4.1 finds near-black
    discs in a busy scene's bright gaps only once that scene is blurred (trainer.probe --gaps)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    return _hardest_mean(pos[(target * care) > 0.5], fraction, logits)


def loss_fn(logits, target, care=None, bce_weight=BCE_WEIGHT, pos_weight=POS_WEIGHT,
            hard_positive_weight=HARD_POSITIVE_WEIGHT):
    """BCE + Dice + hard negatives (+ hard positives) over the pixels that count (care = 0 on
    dust too faint to see)."""
    logits = logits.float()
    if care is None:
        care = torch.ones_like(target)
    bce = F.binary_cross_entropy_with_logits(
        logits, target, weight=care, pos_weight=torch.tensor(pos_weight, device=logits.device),
        reduction="sum") / care.sum().clamp(min=1)
    loss = (bce_weight * bce + dice_loss(logits, target, care)
            + HARD_NEGATIVE_WEIGHT * hard_negative_bce(logits, target, care))
    if hard_positive_weight:
        loss = loss + hard_positive_weight * hard_positive_bce(logits, target, care)
    return loss


def distill_loss(logits, teacher_prob):
    return F.binary_cross_entropy_with_logits(logits.float(), teacher_prob.float())


def load_teacher(path, device):
    """A frozen network whose probabilities the student learns alongside the labels, as a callable
    (BGR [0, 1] batch -> probabilities): trained weights of any architecture (trainer/weights/*.pt,
    model.pt) run in torch; an exported model (its IR `.xml`) runs in OpenVINO."""
    if str(path).endswith(".xml"):
        return OpenVinoTeacher(path)
    from .export import load_checkpoint
    teacher, _, _ = load_checkpoint(path)
    teacher = teacher.to(device).eval().requires_grad_(False)
    return lambda x: torch.sigmoid(teacher(x).float())


class OpenVinoTeacher:
    """An exported model as the teacher. On a CPU, OpenVINO runs it several times faster than
    torch runs its weights (session 10, B1 at 256 px on 2 cores: 19 tiles/s in torch bf16,
    ~115 in OpenVINO), and the teacher's forward pass was most of a light student's step.
    Read now (a bad file fails before the pools are built), compiled at first use: the pool
    builders fork, and a fork after an OpenVINO compile hangs."""

    def __init__(self, path):
        import openvino as ov
        self.core = ov.Core()
        self.model = self.core.read_model(path)
        self.compiled = None

    def __call__(self, x):
        if self.compiled is None:
            self.compiled = self.core.compile_model(self.model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        probabilities = self.compiled(x.detach().float().cpu().contiguous().numpy())[0]
        return torch.from_numpy(probabilities).to(x.device)


def targets(masks):
    """(dust, care) float tensors [N,1,H,W] from truth masks (255 dust, 128 don't care, 0 clean),
    on the masks' device when they are a tensor."""
    dust, care = validate.truth(torch.as_tensor(masks)[:, None])
    return dust.float(), care.float()


def lr_at(progress, step, base_lr, warmup=WARMUP_STEPS):
    """Linear warm-up, then cosine to MIN_LR_FRACTION over progress (steps or time, whichever is further)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return base_lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cos)


def augment(rng, *tensors):
    """Free augmentation of a batch (image, targets...): the same rotation and flip for each
    (dust has no orientation)."""
    k = int(rng.integers(4))
    if k:
        tensors = [torch.rot90(t, k, (2, 3)) for t in tensors]
    if rng.random() < 0.5:
        tensors = [t.flip(3) for t in tensors]
    return tensors


def pick_device(name="auto"):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def bf16_pays(device: str) -> bool:
    """Whether bf16 autocast speeds training up here: on CUDA, and on CPUs for which oneDNN has
    bf16 kernels (AVX-512, AMX). Elsewhere PyTorch emulates bf16: on an AVX2-only EPYC one step
    (batch 16, 256 px, B1) took 54 s with it and 7.5 s in fp32."""
    if device.startswith("cuda"):
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(run, row):
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def plot_metrics(run):
    """metrics.png from metrics.jsonl; skipped quietly when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if "valid_dice" in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    ax[0].set_yscale("log")
    ax[0].set_title("train loss")
    for key in ("valid_dice", "valid_precision", "valid_recall", "valid_object_recall"):
        ax[1].plot([r["step"] for r in valid], [r.get(key) for r in valid], label=key)
    ax[1].legend()
    ax[1].set_title("held-out synthetic")
    path = os.path.join(run, "metrics.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def progress_summary(step, elapsed, tiles_seen):
    """How far a run got: the summary's progress fields (final.json, model.pt, a stopped
    run's checkpoint read by export.load_summary)."""
    return {"step": step, "minutes": elapsed / 60, "tiles_seen": tiles_seen,
            "tiles_per_s": tiles_seen / elapsed if elapsed else 0.0}


def prepare_pools(run, backgrounds, sprite_dir, tile, pool, valid_pool, seed, workers, echo=print,
                  busy_share=data.BUSY_SHARE, busy_texture=data.BUSY_TEXTURE, growing=0, generator=None):
    """Split backgrounds by scene and build (or reuse) the training and validation pools.
    growing: another process is filling run/pool-train (--growing-pool): wait until this many of
    its tiles are written instead of building it. generator: the training pool's overrides of
    synth's shares (--generator); the validation pool keeps the defaults, so runs compare."""
    paths = synth.load_backgrounds(backgrounds)
    if data.count_scenes(paths) < 2:
        raise TrainError("need background photos of at least 2 scenes (one goes to validation)")
    train_bg, valid_bg = data.split_backgrounds(paths)
    from tqdm import tqdm
    pools = {}
    if growing:
        try:
            pools["train"] = data.wait_for_pool(os.path.join(run, "pool-train"), growing, GROWING_POOL_WAIT_S)
        except ValueError as exc:
            raise TrainError(f"--growing-pool: {exc}") from None
    for name, bgs, count, s, share, shares in (("valid", valid_bg, valid_pool, seed + 1, 0.0, None),
                                               ("train", train_bg, pool, seed, busy_share, generator)):
        if name in pools:
            continue
        with tqdm(total=count, desc=f"synth {name}", file=sys.stderr) as bar:
            pools[name] = data.build_pool(os.path.join(run, f"pool-{name}"), bgs, count, tile, s,
                                          sprite_dir, workers, bar.update, busy_share=share,
                                          busy_texture=busy_texture, generator=shares)
    echo(f"backgrounds: {len(train_bg)} train, {len(valid_bg)} validation")
    return pools, train_bg, valid_bg


def load_probe_photos(given):
    """{scene: working-scale photo} of --probe-photos (files or folders); a TrainError names a
    photo that cannot be read or is too small for the probe's window."""
    photos = {}
    for path in context_probe.photo_paths(given):
        try:
            photo = context_probe.working_photo(path)
        except ValueError as exc:
            raise TrainError(f"--probe-photos {path}: {exc}") from None
        if min(photo.shape[:2]) < context_probe.WINDOW:
            raise TrainError(f"--probe-photos {path}: smaller than the probe's {context_probe.WINDOW} px window")
        photos[synth.scene_name(path)] = photo
    if given and not photos:
        raise TrainError(f"--probe-photos {', '.join(given)}: no photos there")
    return photos


def evaluate(net, pool, device, amp):
    images, masks = pool
    prob = validate.predict(net, images, device, amp)
    return validate.score(prob, masks)


def load_init(net, path, spec, state=None):
    """Warm start: weights of an earlier run (model.pt / checkpoint.pt / trainer/weights/*.pt);
    `state` is that file already loaded."""
    if state is None:
        state = _read_weights(path, "--init")
    init_spec = state.get("config", {}).get("spec")
    weights = {k: v.float() for k, v in state["model"].items()}
    if init_spec == spec:
        net.load_state_dict(weights)
        return set(weights)
    base = models.ARCHITECTURES[spec["arch"]].get("extends")
    if base is None or init_spec != {**spec, "arch": base}:
        raise TrainError(f"--init {path}: network {init_spec} != {spec}")
    # a network that extends the init's: every init weight must find its place
    _missing, unexpected = net.load_state_dict(weights, strict=False)
    if unexpected:
        raise TrainError(f"--init {path}: weights {unexpected[:3]}... have no place in {spec}")
    return set(weights)


def pruned_spec(init, init_state, spec):
    """(spec, pruning record): a pruned --init (`dustspot prune`; `init_state`: that file loaded)
    of the network the flags name defines the network to train (its narrower channels); any other
    init is checked by load_init."""
    init_cfg = init_state.get("config", {})
    init_spec = init_cfg.get("spec", {})
    if not init_spec.get("channels"):
        return spec, None
    base = {k: v for k, v in init_spec.items() if k != "channels"}
    if base != spec:
        raise TrainError(f"--init {init} is a pruned {base['arch']} network: give its --arch {base['arch']} "
                         f"--encoder {base['encoder']} --decoder-channels "
                         f"{','.join(map(str, base['decoder_channels']))}")
    return init_spec, init_cfg.get("pruned")


def freeze(net, names):
    """Stop training the parameters in `names` (from --init). Returns the modules left entirely
    frozen: train_mode keeps those in eval mode, so their batch-norm statistics stay the init's."""
    frozen_modules = []
    for module_name, module in net.named_modules():
        own = [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters()]
        if own and all(n in names for n in own):
            frozen_modules.append(module)
    for name, param in net.named_parameters():
        if name in names:
            param.requires_grad_(False)
    return frozen_modules


def train_mode(net, frozen_modules=()):
    net.train()
    for module in frozen_modules:
        module.eval()


def _read_weights(path, what):
    """A torch file of dustspot weights ({"model": ..., "config": ...}), or a TrainError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:                          # truncated, garbage, not a torch file at all
        raise TrainError(f"{what} {path}: cannot be read as dustspot weights "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise TrainError(f"{what} {path}: not dustspot weights (no 'model' state dict)")
    return state


# flag -> how the run's configuration holds it (for `--resume` with flags that differ from it)
def _in_force(cfg):
    spec = cfg.get("spec", {})
    return {"--size": cfg.get("tile"), "--batch": cfg.get("batch"), "--lr": cfg.get("lr"),
            "--arch": spec.get("arch"), "--encoder": spec.get("encoder"),
            "--decoder-channels": ",".join(map(str, spec.get("decoder_channels", []))),
            "--pool": cfg.get("pool"), "--valid-pool": cfg.get("valid_pool"), "--seed": cfg.get("seed"),
            "--sprites": cfg.get("sprites"), "--init": cfg.get("init"), "--data": cfg.get("datasets", []),
            "--teacher": cfg.get("teacher"), "--real-fraction": cfg.get("real_fraction"),
            "--distill-weight": cfg.get("distill_weight"), "--freeze-init": bool(cfg.get("freeze_init")),
            "--busy-share": cfg.get("busy_share", data.BUSY_SHARE),
            "--busy-texture": cfg.get("busy_texture", data.BUSY_TEXTURE),
            "--hard-positives": cfg.get("hard_positive_weight", 0.0),
            "--generator": cfg.get("generator", {}),
            "BACKGROUNDS": cfg.get("backgrounds")}


def _same(flag, given, in_force):
    if flag == "--decoder-channels":
        given = ",".join(str(int(c)) for c in (given.split(",") if isinstance(given, str) else given))
    elif flag in ("--init", "--teacher", "--sprites"):
        return (given and os.path.abspath(given)) == (in_force and os.path.abspath(in_force))
    elif flag in ("--data", "BACKGROUNDS"):
        norm = (lambda paths: [os.path.abspath(p) for p in paths or []])
        return norm(given) == norm(in_force)
    elif isinstance(given, float) or isinstance(in_force, float):
        return in_force is not None and math.isclose(float(given), float(in_force), rel_tol=1e-9)
    return given == in_force


def resume_differences(cfg, given):
    """[(flag, given, in force)] for the flags given on `--resume` that the run's configuration
    overrides. `given`: {flag: value} of the flags given on the command line."""
    in_force = _in_force(cfg)
    return [(flag, value, in_force[flag]) for flag, value in (given or {}).items()
            if flag in in_force and not _same(flag, value, in_force[flag])]


def _show(value):
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


def train(run, backgrounds, sprite_dir=None, tile=TILE, batch=BATCH, steps=None, minutes=None,
          lr=LR, arch=models.DEFAULT_ARCH, encoder=models.DEFAULT_ENCODER,
          decoder_channels=models.DEFAULT_DECODER, pool=POOL, valid_pool=VALID_POOL,
          threads=THREADS, workers=WORKERS, seed=SEED, device="auto", amp=None, resume=False,
          checkpoint_minutes=CHECKPOINT_MINUTES, eval_minutes=EVAL_MINUTES, command=None,
          echo=print, datasets=(), real_fraction=REAL_FRACTION, init=None, stop_minutes=None,
          teacher=None, distill_weight=DISTILL_WEIGHT, freeze_init=False, given=None, warn=None,
          busy_share=data.BUSY_SHARE, busy_texture=data.BUSY_TEXTURE,
          hard_positive_weight=HARD_POSITIVE_WEIGHT, growing_pool=False, generator=None, probe_photos=()):
    """Train (or with resume, continue) the run in folder `run`. Everything that can be checked
    without building the tile pools (the run folder, the checkpoint or --init and the network
    they hold, --teacher, --batch against --pool) is checked first; a TrainError says what and why.

    growing_pool: the run's pool-train is still being filled by another process (trainer/gpu_sweep.sh
    links it in): start once a batch of it is written and draw from what is written so far.
    generator: {NAME: share} for the training pool instead of trainer.synth's defaults
    (synth.GENERATOR_SHARES; recorded in config.json and the pool's pool.json).
    probe_photos: clean photos (files or folders) that trainer.context_probe runs on at every
    evaluation and at the end: metrics.jsonl rows and final.json's "context_probe" hold the
    share of disks found per scene (does the network switch dust off on them, and does that move).

    On resume the run's configuration is in force: `given` ({"--batch": 8, ...}, the flags given
    on the command line) that differ from it are reported through `warn` (stderr). The budget
    flags given replace the run's budget: --minutes alone lifts a --steps limit and --steps alone
    a --minutes one (neither: the run's own budget)."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    if not steps and not minutes and not resume:
        raise TrainError("give --steps or --minutes (or both)")
    if freeze_init and not resume and (not init or not models.ARCHITECTURES.get(arch, {}).get("extends")):
        raise TrainError("--freeze-init trains only what --init lacks: give --init with the weights of the "
                         f"architecture that --arch extends (none of {arch!r}'s parameters would train)")
    if os.path.exists(run) and not os.path.isdir(run):
        raise TrainError(f"--run {run}: exists and is not a folder")
    ckpt_path = os.path.join(run, "checkpoint.pt")
    if resume and not os.path.exists(ckpt_path):
        raise TrainError(f"--resume: no {ckpt_path} (nothing to resume)")
    if not resume:
        used = [n for n in ("checkpoint.pt", "model.pt") if os.path.exists(os.path.join(run, n))]
        if used:
            raise TrainError(f"--run {run} is already used (it holds {' and '.join(used)}): give --resume to "
                             "continue that run, or another --run folder; training anew there would overwrite "
                             "its model.pt and mix its metrics.jsonl")
    device = pick_device(device)
    if amp is None:                                 # a runtime choice: a resumed run may move machines
        amp = bf16_pays(device)
    init_state = None                  # the --init file, read once for a new run
    if resume:
        state = _read_weights(ckpt_path, "--resume: checkpoint")
        cfg = state.get("config")
        if not isinstance(cfg, dict) or not {"spec", "batch", "lr", "seed"} <= set(cfg) \
                or not {"optimizer", "step", "elapsed", "tiles_seen"} <= set(state):
            raise TrainError(f"--resume: {ckpt_path} is not a training checkpoint (no config, optimizer or step)")
        for flag, value, kept in resume_differences(cfg, given):
            warn(f"warning: --resume continues {run} as configured: {flag} {_show(value)} is ignored; "
                 f"in force: {flag} {_show(kept)}")
        # a resumed run may change its budget and chooses amp for this machine; the rest comes
        # from the checkpoint
        if steps or minutes:
            lifted = [f"--{k} {cfg[k]:g}" for k, v in (("steps", steps), ("minutes", minutes)) if not v and cfg.get(k)]
            cfg["steps"], cfg["minutes"] = steps or None, minutes or None
            if lifted:
                echo(f"budget: {f'--steps {steps}' if steps else f'--minutes {minutes:g}'}; the run's "
                     f"{' and '.join(lifted)} no longer limits it (give both flags to keep both limits)")
        cfg["amp"] = amp
    else:
        state = None
        if batch < 1:
            raise TrainError(f"--batch {batch}: give at least 1")
        spec, pruned = {"arch": arch, "encoder": encoder, "decoder_channels": list(decoder_channels)}, None
        if init:
            init_state = _read_weights(init, "--init")
            try:
                spec, pruned = pruned_spec(init, init_state, spec)
            except (KeyError, TypeError, AttributeError) as exc:
                raise TrainError(f"--init {init}: not dustspot weights (config: {exc!r})") from None
        cfg = {"tile": tile, "batch": batch, "steps": steps, "minutes": minutes, "lr": lr,
               "spec": spec, "pruned": pruned,
               "pool": pool, "valid_pool": valid_pool, "seed": seed, "threads": threads,
               "amp": amp, "bce_weight": BCE_WEIGHT,
               "loss": f"{BCE_WEIGHT:g}*BCE + Dice + {HARD_NEGATIVE_WEIGHT:g}*BCE(hardest "
                       f"{HARD_NEGATIVE_FRACTION:.1%} of background)",
               "optimizer": f"AdamW(lr={lr}, wd={WEIGHT_DECAY}), warm-up {WARMUP_STEPS} + cosine",
               "backgrounds": list(backgrounds), "sprites": sprite_dir,
               "working_size": synth.WORKING_SIZE, "command": command,
               "datasets": [os.path.abspath(d) for d in datasets], "real_fraction": real_fraction,
               "init": init, "freeze_init": bool(init and freeze_init),
               "teacher": teacher, "distill_weight": distill_weight if teacher else None,
               "busy_share": busy_share, "busy_texture": busy_texture,
               "hard_positive_weight": hard_positive_weight,
               "generator": dict(sorted((generator or {}).items()))}
        if hard_positive_weight:
            cfg["loss"] += f" + {hard_positive_weight:g}*BCE(hardest {HARD_POSITIVE_FRACTION:.0%} of dust)"
        if teacher:
            cfg["loss"] += f" + {distill_weight:g}*BCE(teacher probability)"

    # Labelled scans (`dustspot prepare`): a share of every batch, and their own validation.
    real = data.load_prepared(cfg.get("datasets", []), "train", cfg["tile"])
    real_valid = data.load_prepared(cfg.get("datasets", []), "valid", cfg["tile"])
    real_per_batch = 0 if real is None else max(1, round(cfg["batch"] * cfg.get("real_fraction", REAL_FRACTION)))
    synthetic_per_batch = cfg["batch"] - real_per_batch
    if synthetic_per_batch > cfg["pool"]:          # drawn without replacement from the pool
        raise TrainError(f"--batch {cfg['batch']} draws {synthetic_per_batch} synthetic tiles per step"
                         f"{f' (and {real_per_batch} labelled)' if real_per_batch else ''}, more than "
                         f"--pool {cfg['pool']} holds: give a --pool of at least {synthetic_per_batch} "
                         "or a smaller --batch")

    # The network, its starting weights and the teacher: before minutes of building pools.
    torch.manual_seed(cfg["seed"])
    try:
        net = models.build(cfg["spec"])
    except Exception as exc:                   # an unknown encoder, channels that do not fit
        raise TrainError(f"cannot build the network {cfg['spec']}: {type(exc).__name__}: {exc}") from None
    step, elapsed, tiles_seen = 0, 0.0, 0
    frozen_names, frozen_modules = set(), []
    if state is None and cfg.get("init"):
        try:
            loaded = load_init(net, cfg["init"], cfg["spec"], init_state)
        except RuntimeError as exc:            # same spec, tensors of other shapes
            raise TrainError(f"--init {cfg['init']}: its weights do not fit {cfg['spec']}: "
                             f"{str(exc).splitlines()[0]}") from None
        frozen_names = loaded if cfg.get("freeze_init") else set()
    elif state is not None:
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise TrainError(f"--resume: {ckpt_path} holds weights that do not fit its own network "
                             f"{cfg['spec']}: {str(exc).splitlines()[0]}") from None
        frozen_names = set(state.get("frozen", []))      # as the run began, whatever --init is now
    if frozen_names:
        frozen_modules = freeze(net, frozen_names)
        if not any(p.requires_grad for p in net.parameters()):
            raise TrainError(f"--freeze-init: {cfg['init']} holds every parameter of {cfg['spec']['arch']}; "
                             "nothing would train (give the weights of the architecture it extends)")
    teacher_net = None
    if cfg.get("teacher"):
        try:
            teacher_net = load_teacher(cfg["teacher"], device)
        except Exception as exc:
            raise TrainError(f"--teacher {cfg['teacher']}: cannot be loaded as a trained network "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})"
                             ) from None

    probe_images = load_probe_photos(probe_photos)

    os.makedirs(run, exist_ok=True)
    torch.set_num_threads(threads)
    if state is None and os.path.exists(os.path.join(run, "metrics.jsonl")):
        os.remove(os.path.join(run, "metrics.jsonl"))      # an unfinished run's, without a checkpoint
        echo(f"{run}: metrics.jsonl of an earlier run that left no checkpoint started afresh")
    pools, train_bg, valid_bg = prepare_pools(run, cfg["backgrounds"], cfg["sprites"], cfg["tile"],
                                              cfg["pool"], cfg["valid_pool"], cfg["seed"], workers, echo,
                                              cfg.get("busy_share", data.BUSY_SHARE),
                                              cfg.get("busy_texture", data.BUSY_TEXTURE),
                                              growing=max(1, synthetic_per_batch) if growing_pool else 0,
                                              generator=cfg.get("generator"))
    train_folder = os.path.join(run, "pool-train")
    ready = data.ready_tiles(train_folder) if growing_pool else len(pools["train"][0])
    if state is None:
        cfg["data"] = {"generator": "trainer.synth.make_sample",
                       "generator_sha1": data.file_sha1(synth.__file__),
                       "train_backgrounds": len(train_bg), "valid_backgrounds": len(valid_bg),
                       "valid_scenes": sorted({synth.scene_name(p) for p in valid_bg}),
                       "busy_share": cfg.get("busy_share", data.BUSY_SHARE),
                       "busy_texture": cfg.get("busy_texture", data.BUSY_TEXTURE),
                       "generator_overrides": cfg.get("generator", {}),
                       "busy_train_scenes": data.pool_meta(os.path.join(run, "pool-train"))
                       .get("busy_backgrounds", []),
                       "growing_pool": bool(growing_pool), "train_tiles_at_start": int(ready),
                       "train": data.describe_pool(pools["train"][1][:ready]),
                       "valid": data.describe_pool(pools["valid"][1])}
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
    if cfg.get("datasets"):
        echo(f"labelled tiles: {0 if real is None else len(real[0])} train, "
             f"{0 if real_valid is None else len(real_valid[0])} valid; {real_per_batch} per batch")

    net = net.to(device)
    if state is None and cfg.get("init"):
        echo(f"initialised from {cfg['init']}")
    if frozen_names:
        echo(f"frozen: the {len(frozen_names)} tensors from --init; training "
             f"{sum(p.numel() for p in net.parameters() if p.requires_grad):,} parameters")
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg["lr"],
                            weight_decay=WEIGHT_DECAY)
    if teacher_net is not None:
        echo(f"distilling from {cfg['teacher']} ({cfg['distill_weight']:g} x BCE on its probabilities)")
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainError(f"--resume: {ckpt_path}: its optimizer state does not fit its network ({exc})") from None
        step, elapsed, tiles_seen = state["step"], state["elapsed"], state["tiles_seen"]
        echo(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    rng = np.random.default_rng([cfg["seed"], step])
    images, masks = pools["train"]
    budget_s = (cfg["minutes"] or 0) * 60

    def progress():
        p = [step / cfg["steps"]] if cfg["steps"] else []
        p += [elapsed / budget_s] if budget_s else []
        return max(p)

    def checkpoint():
        _save({"model": net.state_dict(), "optimizer": opt.state_dict(), "frozen": sorted(frozen_names),
               "scheduler": {"kind": "warmup-cosine", "progress": progress()},
               "step": step, "elapsed": elapsed, "tiles_seen": tiles_seen, "config": cfg}, ckpt_path)

    from tqdm import tqdm
    bar = tqdm(total=cfg["steps"] or None, initial=step, desc="train", file=sys.stderr,
               mininterval=10)
    last_ckpt = last_eval = elapsed
    window_t, window_n, window_loss = time.time(), 0, []
    train_mode(net, frozen_modules)
    stop_s = (stop_minutes or 0) * 60             # stop early, schedule unchanged (a staged recipe)
    while progress() < 1.0 and not (stop_s and elapsed >= stop_s):
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(progress(), step, cfg["lr"])
        if ready < len(images) and step % GROWING_POOL_REFRESH_STEPS == 0:
            ready = data.ready_tiles(train_folder)
        idx = np.sort(rng.choice(ready, synthetic_per_batch, replace=False))
        batch_images, batch_masks = np.asarray(images[idx]), np.asarray(masks[idx])
        if real_per_batch:
            pick = rng.choice(len(real[0]), real_per_batch, replace=len(real[0]) < real_per_batch)
            batch_images = np.concatenate([batch_images, real[0][pick]])
            batch_masks = np.concatenate([batch_masks, real[1][pick]])
        # the batch travels as bytes and becomes floats, targets and rotations on the device: on a
        # GPU the one CPU thread that assembled float batches was the bound (session 14)
        x = torch.from_numpy(np.ascontiguousarray(batch_images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        y, care = targets(torch.from_numpy(np.ascontiguousarray(batch_masks)).to(device))
        x, y, care = augment(rng, x, y, care)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cfg["amp"]):
            logits = net(x)
            if teacher_net is not None:
                with torch.no_grad():
                    teacher_prob = teacher_net(x)
        loss = loss_fn(logits, y, care, hard_positive_weight=cfg.get("hard_positive_weight", 0.0))
        if teacher_net is not None:
            loss = loss + cfg["distill_weight"] * distill_loss(logits, teacher_prob)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        tiles_seen += cfg["batch"]
        elapsed += time.time() - t0
        window_n += cfg["batch"]
        window_loss.append(loss.item())
        bar.update(1)
        if step % LOG_STEPS == 0:
            rate = window_n / (time.time() - window_t)
            row = {"step": step, "loss": float(np.mean(window_loss)), "lr": opt.param_groups[0]["lr"],
                   "tiles_per_s": rate, "minutes": elapsed / 60, "tiles_seen": tiles_seen}
            _log(run, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tps=f"{rate:.1f}")
            window_t, window_n, window_loss = time.time(), 0, []
        if elapsed - last_ckpt >= checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = elapsed
        if elapsed - last_eval >= eval_minutes * 60:
            s = evaluate(net, pools["valid"], device, cfg["amp"])["best"]
            _log(run, {"step": step, "minutes": elapsed / 60, **{f"valid_{k}": v for k, v in s.items()}})
            echo(f"step {step}: valid {s}")
            if probe_images:
                found = context_probe.probe_photos(net, probe_images, device=device)
                _log(run, {"step": step, "minutes": elapsed / 60, "context_probe": found})
                echo(f"step {step}: context probe, share of disks found {found}")
            last_eval = elapsed
            train_mode(net, frozen_modules)
            window_t = time.time()
    bar.close()
    checkpoint()
    result = evaluate(net, pools["valid"], device, cfg["amp"])
    best = result["best"]
    _log(run, {"step": step, "minutes": elapsed / 60, "final": True,
               **{f"valid_{k}": v for k, v in best.items()}})
    summary = {**progress_summary(step, elapsed, tiles_seen), "valid": best, "valid_curve": result["curve"]}
    if real_valid is not None:
        summary["valid_labelled"] = evaluate(net, real_valid, device, cfg["amp"])["best"]
    if probe_images:
        summary["context_probe"] = context_probe.probe_photos(net, probe_images, device=device)
        _log(run, {"step": step, "minutes": elapsed / 60, "final": True, "context_probe": summary["context_probe"]})
        echo(f"context probe, share of disks found {summary['context_probe']}")
    with open(os.path.join(run, "final.json"), "w") as f:
        json.dump(summary, f, indent=2)
    _save({"model": net.state_dict(), "config": cfg, "summary": summary}, os.path.join(run, "model.pt"))
    plot_metrics(run)
    echo(f"done: {step} steps, {elapsed / 60:.1f} min, valid {best}")
    return summary
