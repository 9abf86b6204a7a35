"""The trainer for real, small: synthetic data, a few training steps on synthetic + labelled
tiles, export to OpenVINO, publish, and segment with the result."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import textured
from trainer import synth


def test_synthetic_samples_are_deterministic_and_labelled():
    background = textured(600, 900, seed=3)
    a = synth.make_sample(background, np.random.default_rng(7), None, 128)
    b = synth.make_sample(background, np.random.default_rng(7), None, 128)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    rng = np.random.default_rng(1)
    samples = [synth.make_sample(background, rng, None, 128) for _ in range(12)]
    for image, mask in samples:
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 128, 255}
    assert sum((m == 255).any() for _, m in samples) >= 6        # most tiles carry dust
    assert any((m == 128).any() for _, m in samples)              # and some dust too faint to see


def test_shadow_dust_takes_the_tone_of_the_scene_under_it():
    """Scene-following dust on a dim green scene: a flat patch a little darker than the
    foliage and of its hue, not a black hole (realdust-dev's forest dust)."""
    rng = np.random.default_rng(0)
    scene = np.clip(rng.normal((20, 43, 26), 12, (64, 64, 3)), 0, 255).astype(np.float32)
    canvas = synth._Canvas(scene.copy(), 1.0)
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1
    canvas.dust(alpha, 0, 0, tone=(0, 0, 0), opacity=1.0, shade=0.75)
    inside = canvas.img[20:44, 20:44]
    assert inside.std(axis=(0, 1)).max() < 1e-3                   # flat: the texture is gone
    np.testing.assert_allclose(inside.mean(axis=(0, 1)), scene[16:48, 16:48].mean(axis=(0, 1)) * 0.75,
                               rtol=0.02)
    assert canvas.cover[20:44, 20:44].all()                       # 25% darker + flat: visible


def test_neutral_dust_darkens_towards_a_grey_and_leaves_the_default_stream_alone():
    """NEUTRAL_DUST_PROB: scene-following dust goes to the grey of the scene's luma (it loses the
    foliage's colour, as an opaque particle does; a shadow keeps it), near-black tones get no
    tint, and while the share is 0 the generator draws exactly what it drew before."""
    rng = np.random.default_rng(0)
    scene = np.clip(rng.normal((20, 43, 26), 12, (64, 64, 3)), 0, 255).astype(np.float32)
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1

    def chroma(img):
        return np.ptp(img, axis=-1).mean() / img.mean()

    coloured, grey = synth._Canvas(scene.copy(), 1.0), synth._Canvas(scene.copy(), 1.0)
    coloured.dust(alpha, 0, 0, tone=None, opacity=1.0, shade=0.75)
    grey.dust(alpha, 0, 0, tone=None, opacity=1.0, shade=0.75, grey=True)
    inside = (slice(20, 44), slice(20, 44))
    assert chroma(coloured.img[inside]) > 0.5 * chroma(scene) and chroma(grey.img[inside]) < 0.01
    assert abs(synth._luma(grey.img[inside]).mean() - synth._luma(coloured.img[inside]).mean()) < 1.0
    translucent = synth._Canvas(scene.copy(), 1.0)
    translucent.dust(alpha, 0, 0, tone=None, opacity=1.0, shade=0.75, transmit=True, grey=True)
    assert np.ptp(translucent.img[inside], axis=-1).max() < 1e-3 and translucent.img[inside].std() > 1

    tones = np.array([synth._dust_tone(np.random.default_rng(i), True, neutral=True) for i in range(200)])
    assert (np.ptp(tones, axis=1) <= 0.2 * tones.mean(axis=1) + 1).all()

    background = textured(300, 400, seed=2)
    before = synth.make_sample(background, np.random.default_rng(4), None, 128)
    with synth.overridden({"NEUTRAL_DUST_PROB": 0.0}):
        np.testing.assert_array_equal(before[0], synth.make_sample(background, np.random.default_rng(4), None, 128)[0])
    with synth.overridden({"NEUTRAL_DUST_PROB": 1.0}):
        assert not np.array_equal(before[0], synth.make_sample(background, np.random.default_rng(4), None, 128)[0])


def test_scene_blobs_on_a_busy_scene_are_not_dark_flat_patches(monkeypatch):
    """Unlabelled scene blobs take the scene's mean colour under them: on a 1-px checkerboard of
    0 and 200 none may come out as a flat dark patch (scan01's dust, which is labelled), as a
    blob toned after the black pixel at its centre did."""
    for name in ("STARFIELD_PROB", "HIGHLIGHT_PROB", "TEXTURE_PROB", "TEXT_PROB"):
        monkeypatch.setattr(synth, name, 0.0)
    monkeypatch.setattr(synth, "SCENE_BLOB_PROB", 1.0)
    scene = np.zeros((256, 256, 3), np.float32)
    scene[(np.indices((256, 256)).sum(axis=0) % 2) == 0] = 200
    lowest = []
    for seed in range(6):
        canvas = synth._Canvas(scene.copy(), 1.0)
        synth._add_hard_negatives(np.random.default_rng(seed), canvas, 1.0, True)
        assert np.abs(canvas.img - scene).max() > 20                 # blobs were drawn
        local = cv2.blur(synth._luma(canvas.img), (5, 5))[8:-8, 8:-8]
        lowest.append(local.min() / 100)                              # the scene's local mean: 100
    assert min(lowest) > 0.6
    assert not canvas.cover.any()                                     # never labelled


def test_twins_are_unlabelled_specks_that_keep_the_colour_of_a_coloured_scene(monkeypatch):
    """SHADOW_TWIN_PROB: specks darker than the scene and of its hue, never labelled, and none
    on a grey scene (there a twin would be neutral dust left unlabelled); GLOW_TWIN_PROB: the
    same, brighter."""
    for name in ("STARFIELD_PROB", "HIGHLIGHT_PROB", "SCENE_BLOB_PROB", "TEXTURE_PROB", "TEXT_PROB"):
        monkeypatch.setattr(synth, name, 0.0)
    monkeypatch.setattr(synth, "SHADOW_TWIN_PROB", 1.0)
    rng = np.random.default_rng(0)
    green = np.clip(rng.normal((20, 43, 26), 6, (256, 256, 3)), 0, 255).astype(np.float32)
    canvas = synth._Canvas(green.copy(), 1.0)
    synth._add_hard_negatives(np.random.default_rng(1), canvas, 1.0, True)
    darker = synth._luma(green) - synth._luma(canvas.img) > 8
    assert darker.sum() > 50                                          # twins were drawn
    twin = canvas.img[darker]
    assert (twin[:, 1] > twin[:, 0] + 5).mean() > 0.9                # still green, not grey
    assert not canvas.cover.any() and not canvas.faint.any()          # never labelled

    grey = np.clip(rng.normal(90, 6, (256, 256, 1)).repeat(3, axis=2), 0, 255).astype(np.float32)
    canvas = synth._Canvas(grey.copy(), 1.0)
    synth._add_hard_negatives(np.random.default_rng(1), canvas, 1.0, True)
    np.testing.assert_array_equal(canvas.img, grey)

    monkeypatch.setattr(synth, "SHADOW_TWIN_PROB", 0.0)             # GLOW_TWIN_PROB: the bright twins
    monkeypatch.setattr(synth, "GLOW_TWIN_PROB", 1.0)
    canvas = synth._Canvas(green.copy(), 1.0)
    synth._add_hard_negatives(np.random.default_rng(1), canvas, 1.0, False)
    brighter = synth._luma(canvas.img) - synth._luma(green) > 8
    assert brighter.sum() > 50 and not (synth._luma(green) - synth._luma(canvas.img) > 8).any()
    twin = canvas.img[brighter]
    assert (twin[:, 1] > twin[:, 0] + 10).mean() > 0.9               # still green, not white
    assert not canvas.cover.any() and not canvas.faint.any()


def test_training_loss_and_validation_ignore_dont_care_pixels():
    import torch

    from trainer import train, validate
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, 4:8, 4:8] = 255
    mask[0, 20:28, 20:28] = 128
    y, care = train.targets(mask)
    dust, cares = validate.truth(mask)                            # the rule the scores use
    assert torch.equal(y[:, 0].bool(), torch.from_numpy(dust)) and torch.equal(care[:, 0].bool(), torch.from_numpy(cares))
    on_device = train.targets(torch.from_numpy(mask))              # as the training loop sends them
    assert torch.equal(on_device[0], y) and torch.equal(on_device[1], care) and y.dtype == torch.float32
    logits = torch.full((1, 1, 32, 32), -4.0)
    logits[..., 4:8, 4:8] = 4.0
    loud = logits.clone()
    loud[..., 20:28, 20:28] = 6.0                                 # "dust" where the truth doesn't care
    assert torch.isclose(train.loss_fn(logits, y, care), train.loss_fn(loud, y, care))
    assert train.loss_fn(loud, y, torch.ones_like(care)) > train.loss_fn(logits, y, torch.ones_like(care))
    prob = torch.sigmoid(loud)[:, 0].numpy()
    best = validate.score(prob, mask, thresholds=(0.5,))["best"]
    assert best["precision"] == 1.0 and best["object_precision"] == 1.0 and best["object_recall"] == 1.0


def test_hard_positives_weigh_the_missed_dust_and_ignore_dont_care():
    import torch

    from trainer import train
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, 2:6, 2:6] = 255                                        # found
    mask[0, 10:14, 10:14] = 255                                    # missed
    mask[0, 20:28, 20:28] = 128
    y, care = train.targets(mask)
    logits = torch.full((1, 1, 32, 32), -4.0)
    logits[..., 2:6, 2:6] = 4.0
    # the hardest quarter of the 32 dust pixels are 8 of the 16 missed ones: BCE(-4 vs 1) each
    expected = torch.nn.functional.softplus(torch.tensor(4.0))
    assert torch.isclose(train.hard_positive_bce(logits, y, care), expected)
    loud = logits.clone()
    loud[..., 20:28, 20:28] = -9.0                                 # don't-care pixels are no positives
    assert torch.isclose(train.hard_positive_bce(loud, y, care), expected)
    found = logits.clone()
    found[..., 10:14, 10:14] = 4.0
    assert train.hard_positive_bce(found, y, care) < 0.05
    assert train.hard_positive_bce(logits, torch.zeros_like(y), care) == 0
    on = train.loss_fn(logits, y, care, hard_positive_weight=0.5)
    assert torch.isclose(on - train.loss_fn(logits, y, care), 0.5 * expected)


def test_evaluation_photos_are_never_training_backgrounds(tmp_path):
    for name in ("Path", "Autumn", "Kite"):
        folder = tmp_path / name / "contents" / "images"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "1920x1080.jpg"), textured(60, 80))
    found = synth.load_backgrounds([str(tmp_path)])
    assert [os.path.relpath(p, tmp_path).split(os.sep)[0] for p in found] == ["Kite"]


def test_a_photo_shipped_in_many_sizes_is_one_background_on_one_side_of_the_split(tmp_path):
    from trainer import data
    kite = tmp_path / "wallpapers" / "Kite" / "contents"
    (kite / "images").mkdir(parents=True)
    (kite / "images_dark").mkdir()
    for size, (h, w) in (("1280x800", (80, 128)), ("2560x1600", (160, 256)), ("640x480", (48, 64))):
        cv2.imwrite(str(kite / "images" / f"{size}.jpg"), textured(h, w))
    os.symlink("2560x1600.jpg", kite / "images" / "1024x768.jpg")   # KDE links sizes to one file
    os.symlink("missing.jpg", kite / "images" / "800x600.jpg")       # dangling: skipped
    cv2.imwrite(str(kite / "images_dark" / "2560x1600.jpg"), textured(160, 256) // 4)
    cv2.imwrite(str(kite / "screenshot.jpg"), textured(64, 100))     # the package's preview
    mate = tmp_path / "mate"
    mate.mkdir()
    cv2.imwrite(str(mate / "Elephants.jpg"), textured(80, 128))
    cv2.imwrite(str(mate / "Elephants_3840x2160.jpg"), textured(216, 384))
    cv2.imwrite(str(mate / "Silk.png"), textured(80, 128))

    found = synth.load_backgrounds([str(tmp_path)])
    assert [os.path.relpath(p, tmp_path) for p in found] == [
        os.path.join("mate", "Elephants_3840x2160.jpg"), os.path.join("mate", "Silk.png"),
        os.path.join("wallpapers", "Kite", "contents", "images", "2560x1600.jpg"),
        os.path.join("wallpapers", "Kite", "contents", "images_dark", "2560x1600.jpg")]
    assert [synth.scene_name(p) for p in found] == ["Elephants", "Silk", "Kite", "Kite"]
    # a folder called contents that is no KDE package; a file named only by its size
    assert synth.scene_name(os.path.join("trips", "contents", "photos", "beach.jpg")) == "beach"
    assert synth.scene_name(os.path.join("scans", "forest", "1920x1080.png")) == "forest"
    # whatever the hash says (10**9: nothing hashes to validation, one scene is moved there),
    # both Kite variants land on the same side
    for valid_every in (1, 2, 3, 10 ** 9):
        train, valid = data.split_backgrounds(found, valid_every)
        assert valid and train or valid_every == 1
        sides = {("valid" if p in valid else "train") for p in found if synth.scene_name(p) == "Kite"}
        assert len(sides) == 1


def test_dust_hidden_in_texture_is_dont_care_in_training_only():
    """A patch 15 levels darker than gravel of contrast ~30 is unseen there: don't-care in
    training tiles (TEXTURE_VISIBLE), dust by realdust-dev's rule in frames; on a flat scene the
    same patch is dust either way."""
    rng = np.random.default_rng(0)
    gravel = np.clip(120 + rng.normal(0, 30, (64, 64, 1)), 0, 255).repeat(3, axis=2).astype(np.float32)
    flat = np.full((64, 64, 3), 120, np.float32)
    alpha = np.zeros((20, 20), np.float32)
    alpha[4:16, 4:16] = 1

    def labelled(scene, texture_visible):
        canvas = synth._Canvas(scene.copy(), 1.0, texture_visible)
        canvas.dust(alpha, 22, 22, tone=np.zeros(3), opacity=0.125)      # 120 -> 105: 15 levels
        return canvas.cover.max() == 1, canvas.faint.max() == 1

    assert labelled(gravel, synth.TEXTURE_VISIBLE) == (False, True)
    assert labelled(gravel, 0.0) == (True, False)
    assert labelled(flat, synth.TEXTURE_VISIBLE) == (True, False)


def test_dust_that_erases_the_texture_is_labelled_in_busy_scenes():
    """An opaque patch of the scene's tone x 0.8 on gravel (realdust-dev's dim forest): its mean
    moves less than the gravel's contrast, but the texture under it is gone, so it is dust; the
    same tone seen through (each pixel x 0.8, texture kept) stays don't-care."""
    rng = np.random.default_rng(1)
    gravel = np.clip(100 + rng.normal(0, 30, (64, 64, 1)), 0, 255).repeat(3, axis=2).astype(np.float32)
    alpha = np.zeros((20, 20), np.float32)
    alpha[4:16, 4:16] = 1

    def labelled(transmit):
        canvas = synth._Canvas(gravel.copy(), 1.0, synth.TEXTURE_VISIBLE)
        canvas.dust(alpha, 22, 22, tone=None, opacity=1.0, shade=0.8, transmit=transmit)
        return canvas.cover.max() == 1, canvas.faint.max() == 1

    assert labelled(transmit=False) == (True, False)
    assert labelled(transmit=True) == (False, True)


def test_busy_scenes_get_their_share_of_the_pool(tmp_path, monkeypatch):
    from trainer import data
    smooth, busy = tmp_path / "smooth.png", tmp_path / "gravel.png"
    cv2.imwrite(str(smooth), textured(600, 900, seed=2))
    noise = np.random.default_rng(0).integers(0, 256, (1600, 2400, 1), dtype=np.uint8)
    cv2.imwrite(str(busy), cv2.GaussianBlur(np.repeat(noise, 3, axis=2), (0, 0), 1.5))   # gravel-like
    assert synth.scene_texture(cv2.imread(str(smooth))) < data.BUSY_TEXTURE
    assert synth.scene_texture(cv2.imread(str(busy))) >= data.BUSY_TEXTURE
    reads = []
    read_background = synth.read_background
    monkeypatch.setattr(synth, "read_background", lambda path: reads.append(path) or read_background(path))

    def chunk_photos(share, seed, texture=data.BUSY_TEXTURE, busy_scenes=("gravel",)):
        """Which photo each chunk was cut from (workers=1: all in this process)."""
        reads.clear()
        folder = tmp_path / f"pool-{share}-{seed}-{texture}"
        data.build_pool(str(folder), [str(smooth), str(busy)], 96, 64, seed=seed, workers=1,
                        busy_share=share, busy_texture=texture)
        assert data.pool_meta(str(folder))["busy_backgrounds"] == list(busy_scenes)
        assert data.pool_meta(str(folder))["busy_texture"] == texture
        return [os.path.basename(p) for p in reads[2:]]       # after one texture read of each

    assert chunk_photos(1.0, 0) == ["gravel.png"] * 4
    # --busy-texture: a threshold above every photo leaves no busy set, so the draw is uniform
    above_all = [p for seed in range(3) for p in chunk_photos(1.0, seed, texture=1000.0, busy_scenes=())]
    assert 0 < above_all.count("gravel.png") < len(above_all)
    uniform = chunk_photos(0.0, 0) + chunk_photos(0.0, 1) + chunk_photos(0.0, 2)
    assert 0 < uniform.count("gravel.png") < len(uniform)


def test_shrunk_inputs_keep_names_links_split_and_sprite_alpha(tmp_path):
    from trainer import data, shrink_inputs
    photos = tmp_path / "photos" / "Kite" / "contents" / "images"
    photos.mkdir(parents=True)
    cv2.imwrite(str(photos / "3000x2000.png"), textured(2000, 3000, seed=1))
    os.symlink("3000x2000.png", photos / "1920x1080.png")
    for name in ("Volna", "Opal"):                         # more scenes: a split to compare
        (tmp_path / "photos" / name).mkdir()
        cv2.imwrite(str(tmp_path / "photos" / name / f"{name}_1200x800.jpg"), textured(800, 1200, seed=2))
    sprites = tmp_path / "sprites" / "dirt"
    sprites.mkdir(parents=True)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[10:30, 10:30, 3] = np.linspace(0, 255, 20, dtype=np.uint8)[None, :]
    cv2.imwrite(str(sprites / "dirt-001.png"), rgba)
    out = tmp_path / "small"
    shrink_inputs.main([str(out), str(tmp_path / "photos"), "--sprites", str(tmp_path / "sprites"),
                        "--long", "1024"])

    small = out / "bg" / "photos" / "Kite" / "contents" / "images"
    assert os.readlink(small / "1920x1080.png") == "3000x2000.png"
    image = cv2.imread(str(small / "3000x2000.png"))              # JPEG bytes under the .png name
    assert image.shape == (683, 1024, 3)
    assert (small / "3000x2000.png").read_bytes()[:2] == b"\xff\xd8"
    before = data.split_backgrounds(synth.load_backgrounds([str(tmp_path / "photos")]))
    after = data.split_backgrounds(synth.load_backgrounds([str(out / "bg" / "photos")]))
    assert [[os.path.basename(p) for p in s] for s in before] == [[os.path.basename(p) for p in s] for s in after]
    assert sorted(synth.scene_name(p) for s in before for p in s) == ["Kite", "Opal", "Volna"]
    sprite = cv2.imread(str(out / "sprites" / "dirt" / "dirt-001.png"), cv2.IMREAD_UNCHANGED)
    assert sprite.shape == (40, 40)                               # only the alpha is kept
    assert np.abs(sprite.astype(int) - rgba[..., 3]).max() <= shrink_inputs.ALPHA_FLOOR
    assert len(np.unique(sprite)) <= 256 // shrink_inputs.ALPHA_STEP + 1
    # the generator reads the one-channel copy as the same alpha as the original's
    original = synth.SpriteBank(str(tmp_path / "sprites")).pick(np.random.default_rng(0))[1]
    copy = synth.SpriteBank(str(out / "sprites")).pick(np.random.default_rng(0))[1]
    assert copy.shape == original.shape == (20, 19)
    assert np.abs(copy - original).max() <= shrink_inputs.ALPHA_FLOOR / 255


def run(args, env=None):
    res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                         timeout=600, env=env or os.environ)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_synth_draws_with_the_generator_shares_it_is_given(tmp_path):
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), textured(300, 400, seed=5))

    def masks(out, *extra):
        run(["synth", str(photo), "--out", str(out), "--count", "6", "--size", "96", "--seed", "2", *extra])
        return [cv2.imread(str(out / "masks" / n), cv2.IMREAD_GRAYSCALE) for n in sorted(os.listdir(out / "masks"))]

    assert any(m.any() for m in masks(tmp_path / "default"))
    assert not any(m.any() for m in masks(tmp_path / "empty", "--generator", "empty_prob=1"))
    # the set says what drew it
    recorded = json.loads((tmp_path / "empty" / "synth.json").read_text())
    assert recorded["generator"] == {"EMPTY_PROB": 1.0} and recorded["seed"] == 2 and recorded["size"] == 96
    assert json.loads((tmp_path / "default" / "synth.json").read_text())["generator"] == {}
    bad = subprocess.run([sys.executable, "-m", "shared.cli", "synth", str(photo), "--out", str(tmp_path / "bad"),
                          "--generator", "SHADOW_DUST_PROB=2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--generator" in bad.stderr and "from 0 to 1" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_run_trains_on_the_written_part_of_a_pool_another_process_is_filling(tmp_path, monkeypatch):
    from trainer import data
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    for i in range(4):
        cv2.imwrite(str(backgrounds / f"photo{i}.jpg"), textured(300, 400, seed=i))
    pool = tmp_path / "run" / "pool-train"
    release = tmp_path / "release"
    # the filler (as trainer/gpu_sweep.sh runs it) holds after its first chunk until released
    filler = subprocess.Popen([sys.executable, "-c", f"""
import os, time
from trainer import data, synth
make_sample, made = synth.make_sample, []
def held(*args, **kwargs):
    while len(made) == data.SAMPLES_PER_BACKGROUND and not os.path.exists({str(release)!r}):
        time.sleep(0.1)
    made.append(1)
    return make_sample(*args, **kwargs)
synth.make_sample = held
paths = synth.load_backgrounds([{str(backgrounds)!r}])
data.build_pool({str(pool)!r}, paths, 96, 64, seed=3, workers=1)
"""])
    try:
        res = run(["train", str(backgrounds), "--run", str(tmp_path / "run"), "--size", "64", "--batch", "4",
                   "--steps", "3", "--pool", "96", "--valid-pool", "24", "--threads", "1", "--workers", "1",
                   "--decoder-channels", "16,8,8,8,8", "--eval-minutes", "100", "--growing-pool"])
        assert filler.poll() is None and data.ready_tiles(str(pool)) == data.SAMPLES_PER_BACKGROUND
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert config["data"]["growing_pool"] and config["data"]["train_tiles_at_start"] == data.SAMPLES_PER_BACKGROUND
        assert json.loads((tmp_path / "run" / "final.json").read_text())["step"] == 3, res.stdout
        release.touch()
        assert filler.wait(timeout=300) == 0
    finally:
        filler.kill()
    assert data.ready_tiles(str(pool)) == 96 and data.pool_meta(str(pool))["count"] == 96
    # a run that would wait for a pool nobody fills says so
    from trainer import train as training
    monkeypatch.setattr(training, "GROWING_POOL_WAIT_S", 0.5)
    with pytest.raises(training.TrainError, match="--growing-pool: .*nobody.*0 tiles written.*fewer than the 4"):
        training.prepare_pools(str(tmp_path / "nobody"), [str(backgrounds)], None, 64, 96, 24, 3, 1, growing=4)


def test_train_export_publish_segment(tmp_path):
    from shared.cvat import write_export
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    for i in range(4):
        cv2.imwrite(str(backgrounds / f"photo{i}.jpg"), textured(300, 400, seed=i))
    # a small labelled set, as `dustspot prepare` makes it from a CVAT export
    scan = textured(128, 192, seed=9)
    mask = np.zeros((128, 192), np.uint8)
    cv2.circle(scan, (50, 60), 4, (20, 20, 20), -1)
    cv2.circle(mask, (50, 60), 4, 255, -1)
    ok, buf = cv2.imencode(".png", scan)
    write_export([("labelled", buf.tobytes(), ".png", mask)], str(tmp_path / "cvat.zip"))
    run(["prepare", str(tmp_path / "cvat.zip"), "--out", str(tmp_path / "labelled"), "--working-size", "192",
         "--tile", "64", "--valid-every", "1000"])

    run_dir = tmp_path / "run"
    res = run(["train", str(backgrounds), "--run", str(run_dir), "--size", "64", "--batch", "4", "--steps", "3",
               "--pool", "48", "--valid-pool", "24", "--threads", "1", "--workers", "1",
               "--decoder-channels", "16,8,8,8,8", "--eval-minutes", "100", "--data", str(tmp_path / "labelled"),
               "--generator", "scratch_prob=0.5", "--probe-photos", str(backgrounds / "photo0.jpg")])
    assert "labelled tiles: 6 train" in res.stdout + res.stderr
    final = json.loads((run_dir / "final.json").read_text())
    assert final["step"] == 3 and 0 <= final["valid"]["dice"] <= 1
    # the context probe watched the run: the share of disks found on the photo, in both records
    assert set(final["context_probe"]) == {"photo0"} and 0 <= final["context_probe"]["photo0"] <= 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["context_probe"] for r in rows if "context_probe" in r] == [final["context_probe"]]
    # a probe photo that cannot be read stops the run before any pool is built, naming it
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg")
    res = subprocess.run([sys.executable, "-m", "shared.cli", "train", str(backgrounds), "--run",
                          str(tmp_path / "probe-bad"), "--steps", "1", "--probe-photos", str(tmp_path / "garbage.jpg")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and f"--probe-photos {tmp_path / 'garbage.jpg'}: unreadable" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "probe-bad" / "pool-train").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["datasets"] == [str(tmp_path / "labelled")] and config["spec"]["decoder_channels"] == [16, 8, 8, 8, 8]
    assert config["generator"] == config["data"]["generator_overrides"] == {"SCRATCH_PROB": 0.5}
    assert json.loads((run_dir / "pool-train" / "pool.json").read_text())["generator"] == {"SCRATCH_PROB": 0.5}
    assert "generator" not in json.loads((run_dir / "pool-valid" / "pool.json").read_text())
    # bf16 autocast only where the CPU has bf16 kernels (emulated, it is 7x slower than fp32)
    import torch
    assert config["amp"] == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    # a run stopped before its end (the GPU sweep's hard stop) keeps its progress in the weights
    from trainer import stages
    (tmp_path / "stopped").mkdir()
    os.link(run_dir / "checkpoint.pt", tmp_path / "stopped" / "checkpoint.pt")
    kept = stages.save_weights(str(tmp_path / "stopped"), str(tmp_path / "stopped.pt"))
    assert kept["summary"]["step"] == 3 and kept["summary"]["tiles_seen"] == 12
    assert kept["summary"]["stopped_at_checkpoint"] and "valid" not in kept["summary"]

    registry = tmp_path / "registry"
    run(["export", str(run_dir), "--registry", str(registry), "--name", "tiny", "--version", "0.0.1"])
    manifest = json.loads((registry / "tiny" / "0.0.1" / "manifest.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["architecture"]["encoder"] == "efficientnet-b1"
    assert manifest["training"]["command"].startswith("dustspot train")
    assert set(manifest["files"]) == {"model.xml", "model.bin"}
    assert manifest["training"]["stages"] == [{**manifest["training"]["stages"][0], "stage": "this model",
                                               "from": "scratch", "steps": 3, "tiles": 12}]

    # held-out frames from the validation backgrounds choose the post-processing at export
    frames = tmp_path / "frames"
    run(["synth", str(backgrounds), "--scans", "--count", "2", "--clean", "1", "--long-side", "1500",
         "--out", str(frames), "--seed", "3"])
    truths = {n: cv2.imread(str(frames / "gt" / n), cv2.IMREAD_UNCHANGED) for n in os.listdir(frames / "gt")}
    assert sorted(truths) == ["clean002.png", "scan000.png", "scan001.png"]
    assert all(set(np.unique(t)) <= {0, 128, 255} for t in truths.values())
    assert (truths["scan000.png"] == 255).any() and not truths["clean002.png"].any()
    run(["export", str(run_dir), "--registry", str(registry), "--name", "tiny", "--version", "0.0.2",
         "--frames", str(frames), "--working-sizes", "256,320"])
    tuned = json.loads((registry / "tiny" / "0.0.2" / "manifest.json").read_text())
    held = tuned["metrics"]["heldout_frames"]
    assert held["frames"] == 3
    assert {"threshold", "spot_threshold", "min_area"} <= set(tuned["recommended"])
    # the working size is tuned too: each size with its own post-processing, the best recommended
    sizes = held["by_working_size"]
    assert set(sizes) == {"256", "320"} and tuned["recommended"]["working_size"] == held["working_size"]
    assert held["objective"] == sizes[str(held["working_size"])]["objective"]

    # INT8 (NNCF) judged against FP16 on the same frames: published within a point, else refused.
    # Calibration needs 300 tiles (the run's own pool has 48): a pool of that many, as a run keeps it.
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(5)
    np.save(calibration / "images.npy", rng.integers(0, 256, (300, 64, 64, 3), dtype=np.uint8))
    np.save(calibration / "masks.npy", np.zeros((300, 64, 64), np.uint8))
    res = subprocess.run([sys.executable, "-m", "shared.cli", "export", str(run_dir), "--registry", str(registry),
                          "--name", "tiny", "--version", "0.0.3", "--no-latest", "--frames", str(frames),
                          "--working-sizes", "256", "--int8", "--calibration-pool", str(calibration)],
                         capture_output=True, text=True, timeout=600)
    assert (registry / "tiny" / "0.0.3" / "manifest.json").exists()
    assert "INT8 vs FP16 on 3 held-out frames" in res.stdout, res.stderr[-2000:]
    if res.returncode == 0:
        q = json.loads((registry / "tiny" / "0.0.3-int8" / "manifest.json").read_text())
        check = q["quantization"]["check_vs_fp16"]
        assert q["precision"] == "int8" and q["parent"] == "tiny:0.0.3"
        assert check["recall_drop"] <= 0.01 and check["precision_drop"] <= 0.01
    else:
        assert "INT8 not published: object" in res.stderr and not (registry / "tiny" / "0.0.3-int8").exists()
    # --int8 on a version already published adds only its INT8 sibling, with that version's settings
    res = subprocess.run([sys.executable, "-m", "shared.cli", "export", str(run_dir), "--registry", str(registry),
                          "--name", "tiny", "--version", "0.0.2", "--frames", str(frames), "--int8",
                          "--calibration-pool", str(calibration)],
                         capture_output=True, text=True, timeout=600)
    assert "tiny:0.0.2 is already published and is this network" in res.stdout, res.stderr[-2000:]
    assert "INT8 vs FP16 on 3 held-out frames" in res.stdout
    assert json.loads((registry / "tiny" / "0.0.2" / "manifest.json").read_text()) == tuned     # untouched

    # the first run kept as a stage (fp16 weights + its record), then a warm start from it
    weights, stages_file = tmp_path / "weights" / "tiny-s1.pt", tmp_path / "stages.json"
    res = subprocess.run([sys.executable, "-m", "trainer.stages", "save", str(run_dir), str(weights),
                          "--stage", "s1", "--note", "first", "--stages-file", str(stages_file)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import torch
    kept = torch.load(weights, weights_only=False)
    assert kept["model"]["net.segmentation_head.0.weight"].dtype == torch.float16 and "optimizer" not in kept
    [s1] = json.loads(stages_file.read_text())
    assert s1["stage"] == "s1" and s1["from"] == "scratch" and s1["note"] == "first" and s1["steps"] == 3
    res = run(["train", str(backgrounds), "--run", str(tmp_path / "run2"), "--size", "64", "--batch", "4",
               "--steps", "1", "--pool", "48", "--valid-pool", "24", "--threads", "1", "--workers", "1",
               "--decoder-channels", "16,8,8,8,8", "--eval-minutes", "100", "--init", str(weights),
               "--teacher", str(run_dir / "model.pt")])
    assert "initialised from" in res.stdout + res.stderr and "distilling from" in res.stdout + res.stderr
    config2 = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert config2["init"] == str(weights) and config2["teacher"] == str(run_dir / "model.pt")
    assert config2["loss"].endswith("10*BCE(teacher probability)")
    # another network cannot take over a published version's INT8
    res = subprocess.run([sys.executable, "-m", "shared.cli", "export", str(tmp_path / "run2"), "--registry",
                          str(registry), "--name", "tiny", "--version", "0.0.2", "--frames", str(frames), "--int8",
                          "--calibration-pool", str(calibration)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "is another network" in res.stderr, res.stderr[-2000:]
    records = json.loads(stages_file.read_text())
    assert stages.lineage(config2["init"], records) == [s1]
    assert stages.describe_run(config2, {"step": 1}, records=records)["from"] == "s1"

    cv2.imwrite(str(tmp_path / "scan.jpg"), textured(200, 300, seed=5))
    run(["segment", str(tmp_path / "scan.jpg"), "--out", str(tmp_path / "out"), "--model", "tiny",
         "--registry", str(registry), "-q"])
    out_mask = cv2.imread(str(tmp_path / "out" / "scan.mask.png"), cv2.IMREAD_UNCHANGED)
    assert out_mask.shape == (200, 300)
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["model"] == {**report["model"], "name": "tiny", "version": "0.0.2"}     # latest
    assert report["settings"]["spot_threshold"] == max(tuned["recommended"]["threshold"],
                                                       tuned["recommended"]["spot_threshold"])
    assert report["settings"]["min_area"] == tuned["recommended"]["min_area"]
    assert report["settings"]["working_size"] == tuned["recommended"]["working_size"]


def test_distillation_loss_is_least_at_the_teacher_probabilities():
    import torch

    from trainer import train
    teacher = torch.tensor([[0.02, 0.3], [0.7, 0.98]])
    at_teacher = torch.logit(teacher).requires_grad_(True)
    loss = train.distill_loss(at_teacher, teacher)
    loss.backward()
    assert at_teacher.grad.abs().max() < 1e-6
    for off in (-1.0, 1.0):
        assert train.distill_loss(torch.logit(teacher) + off, teacher) > loss + 0.01


def test_an_exported_teacher_gives_the_probabilities_of_its_weights(tmp_path):
    """--teacher MODEL.xml (OpenVINO) and --teacher WEIGHTS.pt (torch) of one network agree, so
    the faster one can stand in for the other."""
    import torch

    from trainer import export, train
    from trainer.model import DustNet
    torch.manual_seed(3)
    net = DustNet(decoder_channels=(16, 8, 8, 8, 8)).eval()
    torch.save({"model": net.state_dict(), "config": {"spec": net.spec}}, tmp_path / "teacher.pt")
    xml = export.to_ir(net, str(tmp_path / "teacher.xml"), fp16=False)
    x = torch.from_numpy(textured(64, 96, seed=2)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
    x[1] = x[1].flip(2)
    from_weights = train.load_teacher(str(tmp_path / "teacher.pt"), "cpu")(x)
    exported = train.OpenVinoTeacher(xml)
    from_ir = exported(x)
    assert from_ir.shape == from_weights.shape == (2, 1, 64, 96) and from_ir.dtype == torch.float32
    assert float((from_ir - from_weights).abs().max()) < 0.02     # bf16 where the CPU has it
    assert float(from_weights.std()) > 1e-3                        # not a constant that agrees by chance
    with pytest.raises(Exception):
        train.load_teacher(str(tmp_path / "teacher.bin"), "cpu")    # neither weights nor an IR


def test_stage_lineage_of_the_bundled_model():
    from trainer import stages
    chain = stages.lineage(os.path.join(stages.WEIGHTS_DIR, "dustspot-unet-0.4.0.pt"))
    assert [r["stage"] for r in chain] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    repo = os.path.dirname(os.path.dirname(stages.WEIGHTS_DIR))
    assert chain[0]["from"] == "scratch" and all(os.path.exists(os.path.join(repo, r["weights"])) for r in chain)
    assert stages.lineage(None) == [] and stages.lineage("/elsewhere/unknown.pt")[0]["stage"] == "init"


def test_probe_pastes_dim_discs_and_counts_the_found_ones():
    from trainer import probe
    flat = np.full((probe.CROP, probe.CROP, 3), 100, np.float32)
    assert probe.high_pass(flat) < 1e-3
    noisy = flat + np.random.default_rng(0).normal(0, 8, flat.shape[:2])[..., None].astype(np.float32)
    assert probe.high_pass(noisy) > 3
    dusty, mask = probe.paste_discs(flat, np.random.default_rng(1))
    assert mask.any() and dusty[mask].max() < 90                                  # dim discs
    assert 100 * probe.SHADE ** 2 <= dusty[mask].mean() <= 85
    assert np.array_equal(dusty[~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9))).astype(bool)],
                          flat[~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9))).astype(bool)])
    assert probe.found_share(mask.astype(np.float32), mask) == 1.0
    half = mask.astype(np.float32) * (np.arange(probe.CROP)[None, :] < probe.CROP // 2)
    assert 0 < probe.found_share(half, mask) < 1
    assert probe.found_share(np.zeros(mask.shape, np.float32), mask) == 0.0


def test_probe_gaps_put_near_black_discs_on_the_bright_part_of_a_crop():
    from trainer import probe
    crop = np.full((probe.CROP, probe.CROP, 3), 40, np.float32)
    crop[:, probe.CROP // 2 + 8:] = 220                                # a bright gap on the right
    dusty, mask = probe.paste_discs(crop, np.random.default_rng(2), shade=0.1, gaps=True)
    _, xs = np.nonzero(mask)
    assert xs.min() > probe.CROP // 2 and dusty[mask].mean() < 60      # in the gap, near-black
    labels = [label for label, _, _ in probe.conditions([0.0], [0.0, 1.5])]
    assert labels == ["blur 0 noise 0", "blur 1.5 noise 0"]


def test_probe_names_a_malformed_number_list(capsys):
    from trainer import probe
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["weights.pt", "image.jpg", "--blur", "0,1.5x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--blur" in err and "'0,1.5x' is not a comma-separated list of numbers" in err


def _tiny_unet_init(tmp_path):
    """(spec, network, weights file) of a small random plain Unet, saved as `--init` reads it."""
    import torch

    from trainer import model as models
    torch.manual_seed(0)
    spec = {"arch": "unet", "encoder": "efficientnet-b1", "decoder_channels": [16, 8, 8, 8, 8]}
    base = models.build(spec).eval()
    init = tmp_path / "base.pt"
    torch.save({"model": base.state_dict(), "config": {"spec": spec}}, init)
    return spec, base, init


def test_full_resolution_branch_starts_as_its_unet_and_trains_alone(tmp_path):
    """unet-fullres warm-started from a plain Unet: the same output at first; with --freeze-init
    only the branch learns (weights and batch-norm statistics of the Unet stay put); exports to IR."""
    import torch

    from trainer import export, train
    from trainer import model as models
    spec, base, init = _tiny_unet_init(tmp_path)

    wide = models.build({**spec, "arch": "unet-fullres"})
    loaded = train.load_init(wide, str(init), wide.spec)
    x = torch.rand(2, 3, 64, 64)
    wide.eval()
    with torch.no_grad():
        assert torch.equal(wide(x), base(x))
    frozen_modules = train.freeze(wide, loaded)
    trainable = {n for n, p in wide.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("net.detail.", "net.fuse.")) for n in trainable)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    opt = torch.optim.AdamW([p for p in wide.parameters() if p.requires_grad], lr=1e-2)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 30:33, 30:33] = 1
    train.train_mode(wide, frozen_modules)
    for _ in range(3):
        loss = train.loss_fn(wide(x), target, torch.ones_like(target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = wide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in loaded)           # running stats too
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("net.fuse."))

    with torch.no_grad():
        wide.eval()
        assert not torch.equal(wide(x), base(x))
    xml = export.to_ir(wide, str(tmp_path / "model.xml"))
    assert export.check_ir(xml, wide, size=64) < 1e-3
    # INT8 keeps the convolutions next to the pixels and to the probability in floating point:
    # the stem and the segmentation head, and here the detail branch's first and the fuse's last
    import openvino as ov

    from trainer.quantize import stem_and_head
    kept = stem_and_head(ov.Core().read_model(xml))
    base_kept = stem_and_head(ov.Core().read_model(export.to_ir(base, str(tmp_path / "base.xml"))))
    assert len(base_kept) == 2 and any("segmentation_head" in n for n in base_kept)
    assert len(kept) == 4 and any("fuse.3" in n for n in kept)

    # --freeze-init needs an init of the architecture this one extends: else nothing would train
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    for i in range(3):
        cv2.imwrite(str(backgrounds / f"photo{i}.jpg"), textured(200, 300, seed=i))
    for arch in ("unet", "unet-fullres"):
        init_path = init if arch == "unet" else tmp_path / "wide.pt"
        if arch == "unet-fullres":
            torch.save({"model": wide.state_dict(), "config": {"spec": wide.spec}}, init_path)
        try:
            train.train(str(tmp_path / f"frozen-{arch}"), [str(backgrounds)], steps=1, arch=arch,
                        decoder_channels=(16, 8, 8, 8, 8), init=str(init_path), freeze_init=True,
                        tile=64, batch=2, pool=8, valid_pool=4, workers=1, threads=1, echo=lambda *_: None)
        except ValueError as e:
            assert "--freeze-init" in str(e)
        else:
            raise AssertionError(f"--freeze-init with a {arch} init trained nothing without saying so")

    # a network that extends nothing refuses another architecture's weights
    other = models.build({**spec, "arch": "unetplusplus"})
    try:
        train.load_init(other, str(init), other.spec)
    except ValueError as e:
        assert "--init" in str(e)
    else:
        raise AssertionError("unetplusplus took unet weights")


def test_colour_cue_branch_sees_grey_dust_apart_from_shadows_and_exports(tmp_path):
    """unet-chroma: its cue maps tell a patch darkened towards grey from an equally dark shadow
    on green; warm-started from a plain Unet it answers as that Unet did; it exports to IR."""
    import openvino as ov
    import torch

    from trainer import export, train
    from trainer import model as models
    from trainer.quantize import stem_and_head
    field = torch.tensor([40.0, 90.0, 50.0]).view(1, 3, 1, 1).expand(1, 3, 96, 96).clone() / 255
    field[..., 20:30, 20:30] = field[..., 20:30, 20:30] / 3 + 16 / 255     # dust: towards grey 24
    field[..., 60:70, 60:70] *= 0.6                                          # a shadow, as dark
    cues = models.colour_cues(field)[0]
    dust, shadow = cues[:, 25, 25], cues[:, 65, 65]
    assert dust[1] > 0.3 and abs(shadow[1]) < 0.1           # chroma lost: dust only
    assert abs(dust[2] - shadow[2]) < 0.02 and shadow[2] > 0.2   # darker than around: both alike
    assert torch.allclose(models.colour_cues(torch.full((1, 3, 40, 40), 0.5)), torch.zeros(1, 3, 40, 40), atol=1e-6)

    spec, base, init = _tiny_unet_init(tmp_path)
    net = models.build({**spec, "arch": "unet-chroma"})
    train.load_init(net, str(init), net.spec)
    net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), base(x))
        net.net.fuse[-1].weight.normal_(0, 0.1)             # as if trained: the branch now counts
        assert not torch.equal(net(x), base(x))
    xml = export.to_ir(net, str(tmp_path / "model.xml"))
    assert export.check_ir(xml, net, size=64) < 1e-3
    # INT8 keeps in float the stem, the head, the fuse's last conv and the branch's first, which
    # sees the pixels through a concatenation with their cues
    kept = stem_and_head(ov.Core().read_model(xml))
    assert len(kept) == 4 and any("fuse.3" in n for n in kept)


def test_pruned_network_keeps_its_trained_channels_rebuilds_from_its_spec_and_trains(tmp_path):
    """`dustspot prune` narrows a trained network by weight magnitude: what is left keeps its
    weights, the spec alone rebuilds it (resume, export, teacher), it exports to the same IR
    contract, and `dustspot train --init` fine-tunes it as the pruned network."""
    import torch

    from trainer import export
    from trainer import model as models
    torch.manual_seed(0)
    spec = {"arch": "unet", "encoder": "efficientnet-b1", "decoder_channels": [32, 16, 16, 8, 8]}
    base = models.build(spec).eval()
    init = tmp_path / "base.pt"
    torch.save({"model": base.state_dict(), "config": {"spec": spec}}, init)
    res = run(["prune", str(init), "--out", str(tmp_path / "pruned.pt"), "--ratio", "0.5", "--round-to", "8"])
    assert "M parameters (was" in res.stdout
    (tmp_path / "truncated.pt").write_bytes(init.read_bytes()[:1000])
    res = subprocess.run([sys.executable, "-m", "shared.cli", "prune", str(tmp_path / "truncated.pt"), "--out",
                          str(tmp_path / "never.pt")], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "truncated.pt: not trained dustspot weights" in res.stderr
    assert not (tmp_path / "never.pt").exists()

    saved = torch.load(tmp_path / "pruned.pt", weights_only=False)
    pruned_spec = saved["config"]["spec"]
    assert {k: v for k, v in pruned_spec.items() if k != "channels"} == spec and pruned_spec["channels"]
    assert saved["config"]["pruned"]["ratio"] == 0.5 and saved["summary"] == {}   # not the unpruned one's
    net = models.build(pruned_spec)
    net.load_state_dict(saved["model"])          # strict: every shape comes from the spec
    net.eval()
    assert models.count_params(net) < 0.6 * models.count_params(base)
    # the stem (it reads the 3 input channels) kept some of its trained filters, not new ones
    name = "net.encoder._conv_stem.weight"
    kept, trained = saved["model"][name], base.state_dict()[name]
    assert kept.shape[0] < trained.shape[0] and kept.shape[0] % 8 == 0
    assert all(any(torch.equal(k, t) for t in trained) for k in kept)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert net(x).shape == base(x).shape == (1, 1, 64, 64)
    xml = export.to_ir(net, str(tmp_path / "pruned.xml"))
    assert export.check_ir(xml, net, size=64) < 1e-3

    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    for i in range(3):
        cv2.imwrite(str(backgrounds / f"photo{i}.jpg"), textured(200, 300, seed=i))
    run_dir = tmp_path / "run"
    tiny = ["--size", "64", "--batch", "2", "--pool", "8", "--valid-pool", "4", "--threads", "1", "--workers", "1",
            "--eval-minutes", "100"]
    res = run(["train", str(backgrounds), "--run", str(run_dir), "--steps", "1", *tiny,
               "--decoder-channels", "32,16,16,8,8", "--init", str(tmp_path / "pruned.pt"), "--teacher", str(init)])
    assert "initialised from" in res.stdout + res.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"] == pruned_spec and config["pruned"]["ratio"] == 0.5
    res = run(["train", str(backgrounds), "--run", str(run_dir), "--steps", "2", "--resume", *tiny])
    assert "resumed at step 1" in res.stdout + res.stderr
    assert json.loads((run_dir / "final.json").read_text())["step"] == 2
    # the flags must name the network it was pruned from
    res = subprocess.run([sys.executable, "-m", "shared.cli", "train", str(backgrounds), "--run",
                          str(tmp_path / "other"), "--steps", "1", *tiny, "--init", str(tmp_path / "pruned.pt")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "--decoder-channels 32,16,16,8,8" in res.stderr, res.stderr[-2000:]

    registry = tmp_path / "registry"
    run(["export", str(run_dir), "--registry", str(registry), "--name", "slim", "--version", "0.0.1"])
    manifest = json.loads((registry / "slim" / "0.0.1" / "manifest.json").read_text())
    assert manifest["architecture"]["pruned"]["ratio"] == 0.5
    assert manifest["architecture"]["params"] == models.count_params(net)
    # its lineage: the network it was pruned from, the pruning, then this fine-tune
    *_, unpruned, pruning_step, this = manifest["training"]["stages"]
    assert unpruned["weights"] == str(init)          # not in trainer/weights/stages.json: an "init" record
    assert pruning_step["stage"] == "prune" and pruning_step["from"] == unpruned["stage"]
    assert pruning_step["ratio"] == 0.5 and pruning_step["weights"] == str(tmp_path / "pruned.pt")
    assert this["from"] == str(tmp_path / "pruned.pt") and this["steps"] == 2


def test_candidate_speed_is_measured_on_the_converted_network():
    from trainer import candidates
    assert candidates.parse("tu-mobilenetv4_conv_small:32-16-16-8-8") == ("tu-mobilenetv4_conv_small", (32, 16, 16, 8, 8))
    assert candidates.parse("efficientnet-b1") == ("efficientnet-b1", candidates.settings.DECODER_CHANNELS)
    res = subprocess.run([sys.executable, "-m", "trainer.candidates", "efficientnet-b0:16-8-8-8-8", "--tile", "64"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    [line] = res.stdout.splitlines()
    assert line.split()[:2] == ["efficientnet-b0", "16-8-8-8-8"] and line.endswith("ms per 64 px tile")
    assert float(line.split()[2]) > 0


def test_separation_compares_each_object_peak_with_the_background_beyond_the_gap():
    from trainer import separation
    truth = np.zeros((200, 200), np.uint8)
    prob = np.random.default_rng(0).uniform(0, 0.1, truth.shape).astype(np.float32)
    for i, (y, x) in enumerate([(20, 20), (20, 100), (100, 20), (100, 100)]):
        truth[y:y + 4, x:x + 4] = synth.DUST
        prob[y:y + 4, x:x + 4] = 0.05 if i == 0 else 0.9     # one object at the background's level
    prob[20:24, 26] = 1.0          # the halo of a found speck, inside the gap: not background
    truth[150:160, 150:160] = synth.DONT_CARE
    prob[150:160, 150:160] = 1.0   # don't care: not background either
    s = separation.separation(prob, truth)
    assert s["objects"] == 4 and s["above_p99"] == 0.75 and s["median_peak"] == pytest.approx(0.9)
    assert s["background_p999"] < 0.1 and s["blobs_per_mp"] == 0
    everywhere = separation.separation(prob, np.full_like(truth, synth.DUST))
    assert everywhere["objects"] == 1 and everywhere["above_p99"] is None    # no background to compare


def test_cue_probe_tells_neutral_dust_from_shadows_by_colour_alone():
    """Dust that darkens towards a neutral tone against shadows that scale a green scene's light,
    both as dark as each other: darkness hardly tells them apart, the colour cue does."""
    from trainer import cue_probe
    assert cue_probe.auc(np.array([2.0, 3.0]), np.array([1.0])) == 1.0
    assert cue_probe.auc(np.array([1.0]), np.array([1.0, 1.0])) == 0.5
    rng = np.random.default_rng(0)
    scene = np.empty((600, 600, 3), np.float32)
    scene[:] = (40, 90, 50)
    scene *= cv2.resize(rng.uniform(0.8, 1.2, (30, 30)), (600, 600), interpolation=cv2.INTER_CUBIC)[..., None]
    truth = np.zeros((600, 600), np.uint8)
    for i, (y, x) in enumerate(rng.integers(20, 580, (160, 2))):
        disc = np.zeros((600, 600), np.uint8)
        cv2.circle(disc, (int(x), int(y)), 4, 1, -1)
        if i % 2:       # shadow: the same colour, 0.6x the light (unlabelled)
            scene[disc > 0] *= 0.6
        elif not truth[max(0, y - 20):y + 20, max(0, x - 20):x + 20].any():   # dust: lerp to neutral 24
            scene[disc > 0] = scene[disc > 0] / 3 + 16
            truth[disc > 0] = 255
    img = np.clip(scene + rng.normal(0, 1.5, scene.shape), 0, 255).astype(np.uint8)
    result = cue_probe.probe(img, truth)
    assert result["dust"] >= 40 and result["scene_spots_per_mp"] > 50
    assert result["chroma_drop"] > 0.95 and result["dark"] < 0.8    # weak texture minima: a little darker


def test_context_probe_finds_disks_a_network_sees_and_names_the_scenes_that_switch_it_off():
    """A hand-built network that calls a pixel dust when it is darker than its 9x9 surroundings,
    unless the 65x65 around it is busy: the probe must find every disk on a flat photo and none
    on a busy one, and refuse a photo with no place where a dark disk would show."""
    import torch
    from torch.nn import functional as F

    from trainer import context_probe

    class ContextSwitch(torch.nn.Module):
        def forward(self, x):
            luma = x.mean(1, keepdim=True)
            near = F.avg_pool2d(luma, 9, 1, 4, count_include_pad=False)
            around = F.avg_pool2d(luma, 65, 1, 32, count_include_pad=False)
            busy = F.avg_pool2d(luma ** 2, 65, 1, 32, count_include_pad=False) - around ** 2
            return 40 * (near - luma) - 400 * busy - 2

    window, disk = context_probe.paste_disk(np.full((33, 33, 3), 200, np.uint8), tone=27, radius=4)
    assert disk.sum() == pytest.approx(np.pi * 16, rel=0.15) and window[16, 16, 0] == 27 and window[0, 0, 0] == 200
    rng = np.random.default_rng(0)
    flat = np.full((500, 700, 3), 150, np.uint8)
    dark = np.full((500, 700, 3), 40, np.uint8)
    busy = rng.integers(0, 256, (500, 700, 3), dtype=np.uint8)
    seen = context_probe.probe(ContextSwitch(), flat, count=6)
    assert seen["disks"] == 6 and seen["found"] == 1.0 and seen["median_lift"] > 0.5
    switched_off = context_probe.probe(ContextSwitch(), busy, count=6)
    assert switched_off["found"] == 0.0 and switched_off["median_peak"] < 0.05
    with pytest.raises(ValueError, match="smaller than"):
        context_probe.probe(ContextSwitch(), flat[:200], count=1)
    with pytest.raises(ValueError, match="no place 40 levels brighter"):     # a dark disk there is no speck
        context_probe.probe(ContextSwitch(), dark, count=1)


def test_hue_probe_pastes_disks_of_the_place_colour_that_a_colour_aware_network_ignores():
    """--hue: as dark as the grey disk but of its place's colour, only on coloured places. A
    network that calls dark *and grey* pixels dust finds the grey disks and none of the hued."""
    import torch
    from torch.nn import functional as F

    from trainer import context_probe

    class GreyDark(torch.nn.Module):
        def forward(self, x):
            luma = x.mean(1, keepdim=True)
            around = F.avg_pool2d(luma, 9, 1, 4, count_include_pad=False)
            chroma = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / (luma + 0.02)
            return 40 * (around - luma) - 20 * chroma - 1

    green = np.zeros((500, 700, 3), np.uint8)
    green[:] = (60, 180, 90)                                      # BGR
    grey = context_probe.probe(GreyDark(), green, count=6)
    hued = context_probe.probe(GreyDark(), green, count=6, hue=True)
    assert grey["found"] == 1.0 and hued["disks"] == 6 and hued["found"] == 0.0
    window, _ = context_probe.paste_disk(green[:33, :33], tone=(10, 30, 15), radius=4)
    assert tuple(window[16, 16]) == (10, 30, 15)
    with pytest.raises(ValueError, match="with colour"):         # a grey photo has no coloured place
        context_probe.probe(GreyDark(), np.full((500, 700, 3), 150, np.uint8), count=1, hue=True)


def test_probes_name_a_missing_photo_and_unloadable_weights(tmp_path):
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), textured(400, 400, seed=1))
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a checkpoint")
    for args, reason in (([str(weights), str(tmp_path / "gone.jpg")], f"no such file or folder: {tmp_path / 'gone.jpg'}"),
                         ([str(weights), str(photo)], f"{weights}: cannot be loaded as trained weights")):
        res = subprocess.run([sys.executable, "-m", "trainer.context_probe", *args], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 1 and reason in res.stderr and "Traceback" not in res.stderr
    truth_set = tmp_path / "set"                  # separation loads the weights the same way
    (truth_set / "gt").mkdir(parents=True)
    (truth_set / "images").mkdir()
    cv2.imwrite(str(truth_set / "gt" / "a.png"), np.zeros((40, 40), np.uint8))
    cv2.imwrite(str(truth_set / "images" / "a.jpg"), textured(40, 40, seed=1))
    for weights_arg in (weights, tmp_path / "gone.pt"):
        res = subprocess.run([sys.executable, "-m", "trainer.separation", str(weights_arg), str(truth_set)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and f"{weights_arg}: cannot be loaded as trained weights" in res.stderr
        assert "Traceback" not in res.stderr


def test_separation_windows_stitch_to_the_whole_image_prediction():
    """The window indexing; a 2-layer net sees 2 px around a pixel, far inside the 32 px margin
    (whether 32 px is enough context for a UNet is not what this checks)."""
    import torch

    from trainer import separation, validate
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1))
    img = np.random.default_rng(1).integers(0, 256, (700, 1100, 3), dtype=np.uint8)
    whole = validate.predict(net, np.pad(img, ((0, 4), (0, 4), (0, 0)), mode="reflect")[None], "cpu", amp=False)[0]
    stitched = separation.probabilities(net, img)
    assert stitched.shape == img.shape[:2]
    np.testing.assert_allclose(stitched[:-2, :-2], whole[:698, :1098], atol=1e-5)


def test_separation_gates_from_blur_replace_only_the_squeeze_excitation_input():
    """The gates of a window are recorded on its blurred copy and replayed on the window itself:
    a blur that changes nothing changes no probability, a real blur of texture changes them
    (with trained weights: a random EfficientNet's deep activations, and so its gates, are ~0)."""
    import cv2
    import torch

    from trainer import export, separation
    net = export.load_weights_or_exit(os.path.join(os.path.dirname(__file__), "..", "trainer", "weights", "dustspot-unet-0.4.0.pt"))
    assert len(separation.squeeze_convs(net)) > 0
    assert separation.squeeze_convs(torch.nn.Conv2d(3, 1, 1)) == []
    img = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (128, 160, 3), dtype=np.uint8), (0, 0), 1.5)
    plain = separation.probabilities(net, img)
    np.testing.assert_allclose(separation.probabilities(net, img, gates_blur=1e-3), plain, atol=1e-6)
    assert np.abs(separation.probabilities(net, img, gates_blur=8) - plain).max() > 0.05
    assert not any(conv._forward_pre_hooks for conv in separation.squeeze_convs(net))   # hooks removed


def test_generator_settings_are_checked_applied_and_restored():
    for name in synth.GENERATOR_SHARES:
        assert 0 <= getattr(synth, name) <= 1, name            # each names a share synth draws with
    assert synth.generator_setting("dark_scene_prob=0.7") == ("DARK_SCENE_PROB", 0.7)
    for bad, reason in (("WORKING_SIZE=1", "NAME one of"), ("DARK_PROB", "NAME one of"),
                        ("DARK_PROB=lots", "not a number"), ("DARK_PROB=1.5", "from 0 to 1")):
        with pytest.raises(ValueError, match=reason):
            synth.generator_setting(bad)
    before = synth.DARK_SCENE_PROB
    with synth.overridden({"DARK_SCENE_PROB": 0.9}):
        assert synth.DARK_SCENE_PROB == 0.9
    assert synth.DARK_SCENE_PROB == before
    with pytest.raises(RuntimeError), synth.overridden({"DARK_SCENE_PROB": 0.9}):
        raise RuntimeError("a failing chunk")
    assert synth.DARK_SCENE_PROB == before


def test_dark_only_shares_change_dark_dust_and_leave_bright_dust_and_the_default_stream_alone():
    """DARK:NAME=VALUE sets a per-object share for dark dust alone: dark dust drawn with
    DARK:FAINT_PROB=1 is all faint, bright dust in the same block is drawn as before."""
    assert synth.generator_setting("dark:faint_prob=0") == ("DARK:FAINT_PROB", 0.0)
    with pytest.raises(ValueError, match="dark dust only"):
        synth.generator_setting("DARK:DARK_PROB=0.5")        # not a per-object share

    def opacities(dark):
        rng = np.random.default_rng(5)
        return np.array([synth._opacity(rng, dark) for _ in range(400)])

    dark_before, bright_before, faint = opacities(True), opacities(False), synth.FAINT_PROB
    assert (dark_before > 0.55).mean() > 0.5                  # mostly opaque by default
    with synth.overridden({"DARK:FAINT_PROB": 1.0}):
        assert (opacities(True) <= 0.55).all()                # dark dust: all faint
        np.testing.assert_array_equal(opacities(False), bright_before)
        assert synth.FAINT_PROB == faint and synth._share("FAINT_PROB", False) == faint
    np.testing.assert_array_equal(opacities(True), dark_before)    # restored after the block

    background = textured(300, 400, seed=2)
    before = synth.make_sample(background, np.random.default_rng(4), None, 128)
    with synth.overridden({"DARK:FLAT_DUST_PROB": synth.FLAT_DUST_PROB}):
        np.testing.assert_array_equal(before[0], synth.make_sample(background, np.random.default_rng(4), None, 128)[0])


def test_a_pool_draws_with_its_generator_settings_records_them_and_is_rebuilt_without(tmp_path):
    from trainer import data
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), textured(600, 900, seed=2))
    folder = str(tmp_path / "pool")
    _, masks = data.build_pool(folder, [str(photo)], 48, 64, seed=1, workers=1, generator={"EMPTY_PROB": 1.0})
    assert not masks.any()                                     # every tile drawn without dust
    assert data.pool_meta(folder)["generator"] == {"EMPTY_PROB": 1.0}
    assert synth.EMPTY_PROB < 1                                # the default is back in this process
    _, masks = data.build_pool(folder, [str(photo)], 48, 64, seed=1, workers=1)
    assert masks.any() and "generator" not in data.pool_meta(folder)
