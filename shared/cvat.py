"""CVAT "Segmentation mask 1.1" (Pascal VOC style) exports: write pre-annotations, read labels.

Layout (docs.cvat.ai, formats/format-smask):
    labelmap.txt                          # label:color_rgb:parts:actions
    ImageSets/Segmentation/default.txt    # image names without extension
    SegmentationClass/<name>.png          # RGB, one colour per label
    SegmentationObject/<name>.png         # RGB, one colour per instance
dustspot also puts the images in JPEGImages/ (CVAT takes images separately, at task
creation; `dustspot prepare` reads them from there when present).
Label colours are always read from labelmap.txt, never assumed.
"""
import os
import zipfile

import cv2
import numpy as np

DUST_LABEL = "dust"
DUST_COLOUR = (250, 50, 83)              # RGB, CVAT's default palette red
BACKGROUND = "background"


def labelmap_text(labels: dict) -> str:
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in labels.items()]
    return "\n".join(lines) + "\n"


def parse_labelmap(text: str) -> dict:
    """{label: (r, g, b)} from labelmap.txt."""
    labels = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colour = line.split(":")[:2]
        labels[name] = tuple(int(c) for c in colour.split(","))
    return labels


def _instance_colours(count: int) -> list:
    rng = np.random.default_rng(0)
    return [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in range(count)]


def write_export(entries, zip_path: str) -> str:
    """entries: (name, image_bytes, image_ext, mask uint8 0/255) -> a CVAT Segmentation mask zip."""
    names = []
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", labelmap_text({BACKGROUND: (0, 0, 0), DUST_LABEL: DUST_COLOUR}))
        for name, image_bytes, ext, mask in entries:
            names.append(name)
            z.writestr(f"JPEGImages/{name}{ext}", image_bytes)
            rgb = np.zeros(mask.shape + (3,), np.uint8)
            rgb[mask > 0] = DUST_COLOUR
            z.writestr(f"SegmentationClass/{name}.png", _png(rgb))
            count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
            objects = np.zeros_like(rgb)
            for i, colour in enumerate(_instance_colours(count - 1), start=1):
                objects[labels == i] = colour
            z.writestr(f"SegmentationObject/{name}.png", _png(objects))
        z.writestr("ImageSets/Segmentation/default.txt", "\n".join(names) + "\n")
    return zip_path


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


class Export:
    """Read access to an export given as a .zip or an unpacked folder."""

    def __init__(self, path: str):
        self.path = path
        self._zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None

    def read(self, member: str) -> bytes | None:
        if self._zip is not None:
            try:
                return self._zip.read(member)
            except KeyError:
                return None
        full = os.path.join(self.path, member)
        if not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            return f.read()

    def members(self) -> list[str]:
        if self._zip is not None:
            return self._zip.namelist()
        return [os.path.relpath(os.path.join(d, f), self.path).replace(os.sep, "/")
                for d, _, files in os.walk(self.path) for f in files]

    def labels(self) -> dict:
        text = self.read("labelmap.txt")
        if text is None:
            raise ValueError(f"{self.path}: no labelmap.txt (export as 'Segmentation mask 1.1')")
        return parse_labelmap(text.decode())

    def names(self) -> list[str]:
        listing = self.read("ImageSets/Segmentation/default.txt")
        if listing is not None:
            return [n.strip() for n in listing.decode().splitlines() if n.strip()]
        return sorted(m[len("SegmentationClass/"):-4] for m in self.members()
                      if m.startswith("SegmentationClass/") and m.endswith(".png"))

    def dust_mask(self, name: str, dust_labels=None) -> np.ndarray:
        """0/255 mask of every pixel whose class colour is a dust label (all but background)."""
        data = self.read(f"SegmentationClass/{name}.png")
        if data is None:
            raise ValueError(f"{self.path}: no SegmentationClass/{name}.png")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        wanted = [c for label, c in self.labels().items()
                  if label != BACKGROUND and (dust_labels is None or label in dust_labels)]
        mask = np.zeros(rgb.shape[:2], bool)
        for colour in wanted:
            mask |= np.all(rgb == np.array(colour, np.uint8), axis=2)
        return mask.astype(np.uint8) * 255

    def image(self, name: str, images_dir: str | None = None) -> tuple[bytes, str]:
        """The image bytes for `name`: from JPEGImages/ in the export, else from images_dir."""
        for member in self.members():
            if member.startswith("JPEGImages/") and os.path.splitext(member[len("JPEGImages/"):])[0] == name:
                return self.read(member), member
        if images_dir:
            for ext in (".jpg", ".jpeg", ".png", ".tif", ".tiff"):
                path = os.path.join(images_dir, name + ext)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        return f.read(), path
        raise ValueError(f"no image for {name!r} in {self.path} (JPEGImages/) or --images")
