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
import zlib

import cv2
import numpy as np

from . import defaults
from .errors import DustspotError, PathError
from .imageio import check_header, read_header
from .storage import safe_relative

DUST_LABEL = "dust"
DUST_COLOUR = (250, 50, 83)              # RGB, CVAT's default palette red
BACKGROUND = "background"


class ExportError(DustspotError):
    """A CVAT export (or one of its members) cannot be used; the message names the member."""


# Limits on what is read from an export, checked before anything is loaded or decoded.
MAX_TEXT_BYTES = 16 * 1024 * 1024                  # labelmap.txt, default.txt
MAX_MEMBER_BYTES = defaults.MAX_PIXELS * 8         # an image or mask: 8 bytes a pixel is generous
_MASK_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_ROWS = 1024                                       # mask rows compared at a time (bounds memory)


def labelmap_text(labels: dict) -> str:
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in labels.items()]
    return "\n".join(lines) + "\n"


def parse_labelmap(text: str, source: str = "labelmap.txt") -> dict:
    """{label: (r, g, b)} from labelmap.txt; lines are `name:r,g,b[:parts[:actions]]`.

    Raises ExportError naming the line for a malformed line, a component outside 0-255, a
    label given twice or two labels of one colour (a mask pixel would be ambiguous).
    """
    labels, owner = {}, {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        fields = line.split(":")
        if len(fields) < 2 or not fields[0].strip():
            raise ExportError(f"{where}: {line[:80]!r} is not 'name:r,g,b' (e.g. 'dust:250,50,83::')")
        name, parts = fields[0].strip(), fields[1].split(",")
        try:
            colour = tuple(int(c) for c in parts)
        except ValueError:
            colour = ()
        if len(colour) != 3:
            raise ExportError(f"{where}: label {name!r} has colour {fields[1]!r}; expected three numbers r,g,b")
        if not all(0 <= c <= 255 for c in colour):
            raise ExportError(f"{where}: label {name!r} has colour {fields[1]!r}; components must be 0-255")
        if name in labels:
            raise ExportError(f"{where}: label {name!r} is given twice")
        if colour in owner:
            raise ExportError(f"{where}: labels {owner[colour]!r} and {name!r} have the same colour {colour}")
        labels[name], owner[colour] = colour, name
    if not labels:
        raise ExportError(f"{source}: no labels")
    return labels


def check_name(name: str, where: str) -> str:
    """A scan name from default.txt or SegmentationClass/ as a safe relative name, or ExportError.

    Names like 'roll1/frame3' (CVAT keeps the task's folders) are allowed. Refused: what
    storage.safe_relative refuses for any output name (absolute names, '..', '.' or empty
    segments, NUL), and, stricter here, backslashes (a Windows path in a listing, not one file
    name) and control characters.
    """
    try:
        safe_relative(name)
    except PathError as exc:
        raise ExportError(f"{where}: scan name refused: {exc}") from None
    if "\\" in name:
        raise ExportError(f"{where}: scan name {name!r} has a backslash; refused")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ExportError(f"{where}: scan name {name!r} has a control character (newline, tab...); refused")
    return name


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


def describe_colours(strays: dict) -> str:
    """'N pixels of colours in no label of labelmap.txt: (r,g,b) xN, ...' for {(r, g, b): pixels}."""
    top = sorted(strays.items(), key=lambda item: -item[1])
    listed = ", ".join(f"({r},{g},{b}) x{n}" for (r, g, b), n in top[:5])
    more = f" and {len(top) - 5} more colours" if len(top) > 5 else ""
    return f"{sum(strays.values())} pixels of colours in no label of labelmap.txt: {listed}{more}"


class Export:
    """Read access to an export given as a .zip or an unpacked folder.

    Every read is capped in size before anything is loaded (MAX_TEXT_BYTES for the text
    files, MAX_MEMBER_BYTES for images and masks); mask headers are checked against the
    pixel limit and the image's size before decoding. Failures are ExportError (or
    ImageError) with messages "MEMBER: reason".
    """

    def __init__(self, path: str, max_pixels: int = defaults.MAX_PIXELS):
        self.path = str(path)
        self.max_pixels = max_pixels
        self._zip = None
        self._members = None
        self._labels = None
        self._images = None
        if os.path.isdir(self.path):
            return
        if not os.path.isfile(self.path):
            raise ExportError(f"{self.path}: no such file or folder")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ExportError(f"{self.path}: not a readable zip file ({exc}); give the 'Segmentation mask 1.1' "
                              "zip or the folder it unpacks to") from None

    def read(self, member: str, limit: int = MAX_MEMBER_BYTES) -> bytes | None:
        """The member's bytes, None when there is no such member; ExportError over `limit`."""
        too_big = f"{member}: over the size limit of {limit} bytes; refused"
        if self._zip is not None:
            try:
                info = self._zip.getinfo(member)
            except KeyError:
                return None
            if info.is_dir():
                return None
            if info.file_size > limit:
                raise ExportError(f"{member}: {info.file_size} bytes unpacked, over the size limit of "
                                  f"{limit} bytes; refused")
            try:
                with self._zip.open(info) as f:
                    data = f.read(limit + 1)        # the declared size may lie: never read more
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                raise ExportError(f"{member}: cannot be unpacked ({exc})") from None
        else:
            full = os.path.join(self.path, member)
            if not os.path.isfile(full):
                return None
            if os.path.getsize(full) > limit:
                raise ExportError(too_big)
            try:
                with open(full, "rb") as f:
                    data = f.read(limit + 1)
            except OSError as exc:
                raise ExportError(f"{member}: cannot be read ({exc.strerror or exc})") from None
        if len(data) > limit:
            raise ExportError(too_big)
        return data

    def _text(self, member: str) -> str | None:
        data = self.read(member, MAX_TEXT_BYTES)
        if data is None:
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ExportError(f"{member}: not UTF-8 text (byte {exc.start}); refused") from None

    def members(self) -> list[str]:
        if self._members is None:
            if self._zip is not None:
                self._members = [m for m in self._zip.namelist() if not m.endswith("/")]
            else:
                self._members = sorted(os.path.relpath(os.path.join(d, f), self.path).replace(os.sep, "/")
                                       for d, _, files in os.walk(self.path) for f in files)
        return self._members

    def labels(self) -> dict:
        if self._labels is None:
            text = self._text("labelmap.txt")
            if text is None:
                raise ExportError(f"{self.path}: no labelmap.txt (export as 'Segmentation mask 1.1')")
            self._labels = parse_labelmap(text)
        return self._labels

    def names(self) -> list[str]:
        """The scan names (default.txt, else SegmentationClass/*.png); ExportError lists every bad one."""
        listing_member = "ImageSets/Segmentation/default.txt"
        listing = self._text(listing_member)
        if listing is not None:
            named = [(n.strip(), f"{listing_member} line {i}") for i, n in enumerate(listing.splitlines(), start=1)
                     if n.strip()]
        else:
            named = sorted((m[len("SegmentationClass/"):-4], m) for m in self.members()
                           if m.startswith("SegmentationClass/") and m.endswith(".png"))
        names, problems, seen = [], [], {}
        for name, where in named:
            try:
                check_name(name, where)
            except ExportError as exc:
                problems.append(str(exc))
                continue
            if name in seen:
                problems.append(f"{where}: scan name {name!r} is listed twice (first at {seen[name]})")
                continue
            seen[name] = where
            names.append(name)
        if problems:
            raise ExportError(f"{self.path}: bad scan names:\n  " + "\n  ".join(problems))
        if not names:
            raise ExportError(f"{self.path}: no scans (ImageSets/Segmentation/default.txt and SegmentationClass/ "
                              "list none); is this a 'Segmentation mask 1.1' export?")
        return names

    def dust_colours(self, dust_labels=None) -> list:
        """The colours of the dust labels: `dust_labels`, or all but background. ExportError when
        a label is not in labelmap.txt, is background, or when no label is left."""
        labels = self.labels()
        known = ", ".join(repr(label) for label in labels)
        if dust_labels:
            unknown = [label for label in dust_labels if label not in labels]
            if unknown:
                raise ExportError(f"unknown label {', '.join(repr(u) for u in unknown)}: labelmap.txt has "
                                  f"{known} (names are case-sensitive)")
            if BACKGROUND in dust_labels:
                raise ExportError(f"{BACKGROUND!r} cannot be a dust label")
            wanted = list(dict.fromkeys(dust_labels))
        else:
            wanted = [label for label in labels if label != BACKGROUND]
            if not wanted:
                raise ExportError(f"labelmap.txt has no label but {BACKGROUND!r} ({known}): nothing is dust")
        return [labels[label] for label in wanted]

    def dust_mask(self, name: str, dust_labels=None, size: tuple | None = None,
                  unknown: dict | None = None) -> np.ndarray:
        """0/255 mask of every pixel whose class colour is a dust label (all but background).

        `size` (width, height): the image's size; a mask of another size is refused (it is never
        stretched). Pixels whose colour is in no label of labelmap.txt are an ExportError naming
        the file and the colours; given an `unknown` dict, they are counted there instead
        ({(r, g, b): pixels}) and the mask treats them as background.
        """
        member = f"SegmentationClass/{name}.png"
        wanted = self.dust_colours(dust_labels)
        data = self.read(member)
        if data is None:
            raise ExportError(f"{member}: missing (every scan needs its class mask)")
        header = read_header(member, data)
        check_header(member, header, self.max_pixels)
        if size is not None and (header.width, header.height) != tuple(size):
            raise ExportError(f"{member}: mask is {header.width}x{header.height} but its image is "
                              f"{size[0]}x{size[1]}; refused (a mask must match its image pixel for pixel)")
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _MASK_FLAGS)
        except cv2.error as exc:
            raise ExportError(f"{member}: cannot be decoded ({exc.err})") from None
        if bgr is None:
            raise ExportError(f"{member}: corrupt or truncated {header.format} (decoder failed)")
        if bgr.dtype != np.uint8:
            raise ExportError(f"{member}: {bgr.dtype} samples; class masks are 8-bit RGB")
        codes = {(r << 16) | (g << 8) | b: (r, g, b) for r, g, b in self.labels().values()}
        wanted_codes = {(r << 16) | (g << 8) | b for r, g, b in wanted}
        mask = np.zeros(bgr.shape[:2], np.uint8)
        strays: dict = {}
        for y in range(0, bgr.shape[0], _ROWS):
            block = bgr[y:y + _ROWS].astype(np.uint32)
            code = (block[:, :, 2] << 16) | (block[:, :, 1] << 8) | block[:, :, 0]
            known = np.zeros(code.shape, bool)
            for c in codes:
                hit = code == c
                known |= hit
                if c in wanted_codes:
                    mask[y:y + _ROWS][hit] = 255
            if not known.all():
                values, counts = np.unique(code[~known], return_counts=True)
                for v, n in zip(values.tolist(), counts.tolist()):
                    strays[v] = strays.get(v, 0) + n
        strays = {(v >> 16, (v >> 8) & 255, v & 255): n for v, n in strays.items()}
        if strays and unknown is None:
            raise ExportError(f"{member}: {describe_colours(strays)}; refused (they would silently become "
                              "background)")
        if unknown is not None:
            unknown.update(strays)
        return mask

    def image(self, name: str, images_dir: str | None = None) -> tuple[bytes, str]:
        """The image bytes for `name`: from JPEGImages/ in the export, else from images_dir."""
        if self._images is None:
            self._images = {}
            for member in self.members():
                if member.startswith("JPEGImages/"):
                    self._images.setdefault(os.path.splitext(member[len("JPEGImages/"):])[0], member)
        member = self._images.get(name)
        if member is not None:
            return self.read(member), member
        if images_dir:
            for ext in defaults.IMAGE_EXTENSIONS:
                path = os.path.join(images_dir, name + ext)
                if os.path.isfile(path):
                    if os.path.getsize(path) > MAX_MEMBER_BYTES:
                        raise ExportError(f"{path}: over the size limit of {MAX_MEMBER_BYTES} bytes; refused")
                    with open(path, "rb") as f:
                        return f.read(), path
        raise ExportError(f"JPEGImages/{name}.*: no image for {name!r} in the export"
                          + (f" or in {images_dir}" if images_dir else " (pass --images FOLDER)"))
