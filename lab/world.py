"""The Shapes world: procedural caption <-> image pairs for training tiny text-to-image models.

An image is a black square (32 px by default, any size from 16 to 1024) holding one or two flat,
anti-aliased objects. An object is one of 5 shapes in one of 8 bright colours, small or large.
Black is the background because every palette colour has a channel at full value, so each is
at least 1.0 (RGB in [0, 1]) from the background: the checker separates objects from noise by
that distance alone. Positions and sizes are fractions of the image side, so a scene
renders the same at 32 and 64 px.

Captions (the whole grammar; `VOCABULARY` lists its 30 words; "an" before "orange"):
  a [small|large] <colour> <shape> [<position>]                                  one object
  a [small|large] <colour> <shape> <relation> a [small|large] <colour> <shape>      two objects
  position: at the top left | at the top | at the top right | on the left | in the middle |
            on the right | at the bottom left | at the bottom | at the bottom right
  relation: to the left of | to the right of | above | below   (object 1 relative to object 2)
Sizes and positions are said or left out per scene (`WorldConfig`), so a model also meets
short prompts such as "a red circle above a blue square". Two objects always differ in colour
or shape, so a caption never leaves open which object is which.

Held-out combinations (compositional generalisation): no training scene contains
  - a colour-shape pair of `HELDOUT_PAIRS` (each colour and each shape still appears in
    training with other partners), or
  - a (shape, relation, shape) triple of `HELDOUT_TRIPLES`, nor its converse (circle below
    triangle is the same picture as triangle above circle, so holding out only the wording
    would hold out nothing).
`split_of(spec)` says which of these a caption contains.

Prompt files: lab/prompt_files.py.

Randomness is explicit: every draw takes a `numpy.random.Generator` (the world is numpy, not
torch), so the same seed gives the same scenes and images on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = {  # name -> RGB in [0, 1]; each has a channel at 1, and any two are >= 0.5 apart
    "red": (1.0, 0.0, 0.0),
    "orange": (1.0, 0.5, 0.0),
    "yellow": (1.0, 1.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "blue": (0.0, 0.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
BACKGROUND = (0.0, 0.0, 0.0)
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
SIZES = {"small": 0.28, "large": 0.38}  # size word -> nominal diameter, fraction of the image side
SIZE_THRESHOLD = float(np.sqrt(SIZES["small"] * SIZES["large"]))  # diameters above it read "large"
RELATIONS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
POSITIONS = {  # region name -> (caption phrase, anchor centre (x, y) as fractions; y grows downwards)
    "top left": ("at the top left", (0.25, 0.25)),
    "top": ("at the top", (0.5, 0.25)),
    "top right": ("at the top right", (0.75, 0.25)),
    "left": ("on the left", (0.25, 0.5)),
    "middle": ("in the middle", (0.5, 0.5)),
    "right": ("on the right", (0.75, 0.5)),
    "bottom left": ("at the bottom left", (0.25, 0.75)),
    "bottom": ("at the bottom", (0.5, 0.75)),
    "bottom right": ("at the bottom right", (0.75, 0.75)),
}
REGION_EDGES = (0.375, 0.625)  # thirds of the anchors' span: a centre's column/row boundaries

HELDOUT_PAIRS = frozenset(
    {
        ("yellow", "circle"),
        ("magenta", "square"),
        ("blue", "triangle"),
        ("red", "cross"),
        ("green", "diamond"),
        ("cyan", "circle"),
    }
)
HELDOUT_TRIPLES = frozenset(
    {
        ("triangle", "above", "circle"),
        ("square", "left of", "cross"),
        ("diamond", "below", "triangle"),
        ("cross", "right of", "circle"),
    }
)
SPLITS = ("train", "heldout", "heldout_pair", "heldout_relation", "heldout_both")

# Placement. The margins keep what a caption says readable from the image: a single object
# stays 2.7 px (at 32 px) inside its region; two objects are >= 0.5 apart along the relation's
# axis and <= 0.1 across it, so even two large ones keep a 3 px gap that blur cannot bridge.
POSITION_JITTER = 0.04  # max offset of a single object's centre from its region anchor
SCALE_JITTER = 0.05  # diameters vary by up to +-5% around the size's nominal value
PAIR_NEAR, PAIR_FAR = (0.2, 0.25), (0.75, 0.8)  # ranges of the two centres along the relation's axis
PAIR_ACROSS, PAIR_ACROSS_JITTER = (0.3, 0.7), 0.05  # shared cross-axis coordinate, per-object offset
SUPERSAMPLE = 4  # anti-aliasing: samples per pixel side

_PHRASES = (*RELATIONS.values(), *(phrase for phrase, _ in POSITIONS.values()))
VOCABULARY = frozenset({"a", "an", *SIZES, *COLOURS, *SHAPES} | {w for phrase in _PHRASES for w in phrase.split()})


@dataclass(frozen=True)
class WorldConfig:
    """How captions are worded when scenes are sampled."""

    p_two_objects: float = 0.5  # probability that a scene holds two objects rather than one
    p_says_size: float = 0.5  # probability that a caption names the objects' sizes
    p_says_position: float = 0.5  # probability that a one-object caption names the object's region

    def __post_init__(self) -> None:
        for name in ("p_two_objects", "p_says_size", "p_says_position"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------- what a caption says


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a caption names it."""

    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES
    size: str | None = None  # a key of SIZES, or None when the caption does not say

    def __post_init__(self) -> None:
        check_choice("colour", self.colour, COLOURS)
        check_choice("shape", self.shape, SHAPES)
        if self.size is not None:
            check_choice("size", self.size, SIZES)

    def words(self) -> str:
        rest = " ".join(w for w in (self.size, self.colour, self.shape) if w)
        return f"{'an' if rest[0] in 'aeiou' else 'a'} {rest}"  # "an orange circle", "a large orange circle"


@dataclass(frozen=True)
class SceneSpec:
    """What a caption says: one or two objects, their relation or the lone object's region."""

    objects: tuple[ObjectSpec, ...]  # one or two objects, in caption order
    relation: str | None = None  # a key of RELATIONS (object 1 relative to object 2); two objects only
    position: str | None = None  # a key of POSITIONS; one object only, None when not said

    def __post_init__(self) -> None:
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a scene holds 1 or 2 objects, not {len(self.objects)}")
        if (self.relation is None) != (len(self.objects) == 1):
            raise ValueError("two objects need a relation, and a single object has none")
        if self.relation is not None:
            check_choice("relation", self.relation, RELATIONS)
        if self.position is not None:
            check_choice("position", self.position, POSITIONS)
            if len(self.objects) == 2:
                raise ValueError("only a one-object caption names a position")
        if len(self.objects) == 2 and _kind(self.objects[0]) == _kind(self.objects[1]):
            raise ValueError(
                f"the two objects must differ in colour or shape: both are {' '.join(_kind(self.objects[0]))}"
            )

    def caption(self) -> str:
        first = self.objects[0].words()
        if self.relation is not None:
            return f"{first} {RELATIONS[self.relation]} {self.objects[1].words()}"
        return f"{first} {POSITIONS[self.position][0]}" if self.position else first


def _kind(obj: ObjectSpec | SceneObject) -> tuple[str, str]:
    return obj.colour, obj.shape


def check_choice(what: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


# ----------------------------------------------------------------------------- a concrete scene


@dataclass(frozen=True)
class SceneObject:
    """One object as drawn."""

    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES
    size: str  # a key of SIZES
    centre: tuple[float, float]  # (x, y) centre of the shape's box, fractions of the image side
    scale: float = 1.0  # diameter = SIZES[size] * scale; the jitter that varies the images

    def __post_init__(self) -> None:
        ObjectSpec(self.colour, self.shape, self.size)  # checks the names
        if not all(0.0 <= c <= 1.0 for c in self.centre):
            raise ValueError(f"centre must lie in [0, 1] x [0, 1], got {self.centre}")
        if abs(self.scale - 1.0) > SCALE_JITTER + 1e-9:
            raise ValueError(
                f"scale must stay within 1 +- {SCALE_JITTER}, or the size word would lie; got {self.scale}"
            )

    @property
    def diameter(self) -> float:
        return SIZES[self.size] * self.scale


@dataclass(frozen=True)
class Scene:
    """A drawable scene whose caption is true of its image."""

    objects: tuple[SceneObject, ...]  # one or two objects, in caption order
    relation: str | None = None  # a key of RELATIONS, true of the centres; two objects only
    says_size: bool = True  # whether the caption names the sizes
    says_position: bool = False  # whether a one-object caption names the object's region

    def __post_init__(self) -> None:
        spec = self.spec()  # checks counts, names and that the two objects differ
        centres = [o.centre for o in self.objects]
        if spec.relation is not None and not relation_holds(spec.relation, *centres):
            raise ValueError(f"relation {spec.relation!r} is false of centres {centres[0]} and {centres[1]}")
        if self.says_position and len(self.objects) == 2:
            raise ValueError("only a one-object caption names a position")

    def spec(self) -> SceneSpec:
        objects = tuple(ObjectSpec(o.colour, o.shape, o.size if self.says_size else None) for o in self.objects)
        position = region_of(self.objects[0].centre) if self.says_position and len(self.objects) == 1 else None
        return SceneSpec(objects, self.relation, position)

    def caption(self) -> str:
        return self.spec().caption()

    def render(self, size: int = 32) -> np.ndarray:
        """The image, (size, size, 3) uint8, objects painted in caption order over the background."""
        if not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
            raise ValueError(f"size must be an int in [16, 1024] pixels, got {size!r}")
        image = np.broadcast_to(np.asarray(BACKGROUND, np.float32), (size, size, 3)).copy()
        for obj in self.objects:
            centre = (obj.centre[0] * size, obj.centre[1] * size)
            cover = shape_coverage(obj.shape, centre, obj.diameter * size, size, size)[..., None]
            image = image * (1 - cover) + np.asarray(COLOURS[obj.colour], np.float32) * cover
        return np.round(image * 255).astype(np.uint8)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) of the shape's box [-1, 1]^2 (v downwards) lie in the shape."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":  # 0.85: about the circle's area, so neither looks bigger
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":  # apex up, base 1.8 below it
        return (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 1.8)
    if shape == "cross":  # a plus sign; long arms, 0.6 wide, keep it apart from a blurred diamond
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")


def shape_coverage(
    shape: str, centre: tuple[float, float], diameter: float, height: int, width: int, supersample: int = SUPERSAMPLE
) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (height, width) float32; centre and diameter in
    pixels; `supersample` x `supersample` point samples per pixel (at most 15)."""
    if not 1 <= supersample <= 15:  # 15 x 15 samples still count in a uint8
        raise ValueError(f"supersample must be in [1, 15], got {supersample}")
    coverage = np.zeros((height, width), np.float32)
    half = diameter / 2
    # only the pixels of the shape's box [-1, 1]^2 can be covered: sample those alone
    x0, x1 = max(int(np.floor(centre[0] - half)), 0), min(int(np.ceil(centre[0] + half)), width)
    y0, y1 = max(int(np.floor(centre[1] - half)), 0), min(int(np.ceil(centre[1] + half)), height)
    if x0 >= x1 or y0 >= y1:
        return coverage
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets).ravel()
    ys = (np.arange(y0, y1)[:, None] + offsets).ravel()
    inside = _inside(shape, ((xs - centre[0]) / half)[None, :], ((ys - centre[1]) / half)[:, None])
    # pool the samples with sums of strided slices: numpy's axis reductions and BLAS matmuls are
    # both far slower on arrays this small (OpenBLAS's threads, on a busy 2-core machine, 100x)
    rows = inside.view(np.uint8).reshape(y1 - y0, supersample, (x1 - x0) * supersample)
    rows = sum(rows[:, k] for k in range(supersample)).reshape(y1 - y0, x1 - x0, supersample)
    coverage[y0:y1, x0:x1] = sum(rows[..., k] for k in range(supersample)) / supersample**2
    return coverage


def relation_holds(relation: str, first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether `relation` is the best word for centre `first` relative to `second`: it points the
    right way along its axis, and that axis carries the larger part of the offset."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > 0 and along > abs(across)


def _cell(centre: tuple[float, float]) -> tuple[int, int]:
    return int(np.searchsorted(REGION_EDGES, centre[0])), int(np.searchsorted(REGION_EDGES, centre[1]))


def region_of(centre: tuple[float, float]) -> str:
    """The POSITIONS region a centre (fractions of the side) falls in."""
    return {_cell(anchor): name for name, (_, anchor) in POSITIONS.items()}[_cell(centre)]


def _names(spec: ObjectSpec, obj: SceneObject) -> bool:
    return (spec.colour, spec.shape) == (obj.colour, obj.shape) and spec.size in (None, obj.size)


def caption_is_true_of(spec: SceneSpec, scene: Scene) -> bool:
    """Whether a caption describes a scene: the same number of objects, each named right (its size
    only if said), the relation true of their centres in caption order, the region if said."""
    if len(spec.objects) != len(scene.objects):
        return False
    if len(spec.objects) == 1:
        obj = scene.objects[0]
        return _names(spec.objects[0], obj) and spec.position in (None, region_of(obj.centre))
    return any(
        _names(spec.objects[0], a) and _names(spec.objects[1], b) and relation_holds(spec.relation, a.centre, b.centre)
        for a, b in (scene.objects, scene.objects[::-1])
    )


# ----------------------------------------------------------------------------- splits and sampling


def split_of(spec: SceneSpec) -> str:
    """Which held-out combinations a caption holds: "train" (none), "heldout_pair",
    "heldout_relation" or "heldout_both"."""
    pair = any(_kind(o) in HELDOUT_PAIRS for o in spec.objects)
    triple = spec.relation is not None and (
        (spec.objects[0].shape, spec.relation, spec.objects[1].shape) in HELDOUT_TRIPLES
        or (spec.objects[1].shape, CONVERSE[spec.relation], spec.objects[0].shape) in HELDOUT_TRIPLES
    )
    return {
        (False, False): "train",
        (True, False): "heldout_pair",
        (False, True): "heldout_relation",
        (True, True): "heldout_both",
    }[(pair, triple)]


def _in_split(spec: SceneSpec, split: str) -> bool:
    found = split_of(spec)
    return found != "train" if split == "heldout" else found == split


def _pick(rng: np.random.Generator, options) -> str:
    options = tuple(options)
    return options[int(rng.integers(len(options)))]


def _draw_object(rng: np.random.Generator, centre: tuple[float, float]) -> SceneObject:
    return SceneObject(
        _pick(rng, COLOURS),
        _pick(rng, SHAPES),
        _pick(rng, SIZES),
        centre,
        float(rng.uniform(1 - SCALE_JITTER, 1 + SCALE_JITTER)),
    )


def _pair_centres(rng: np.random.Generator, relation: str) -> tuple[tuple[float, float], tuple[float, float]]:
    near, far = rng.uniform(*PAIR_NEAR), rng.uniform(*PAIR_FAR)
    across = rng.uniform(*PAIR_ACROSS) + rng.uniform(-PAIR_ACROSS_JITTER, PAIR_ACROSS_JITTER, 2)
    first, second = (near, far) if relation in ("left of", "above") else (far, near)
    if relation in ("left of", "right of"):
        return (first, across[0]), (second, across[1])
    return (across[0], first), (across[1], second)


def sample_scene(
    rng: np.random.Generator, split: str = "train", n_objects: int | None = None, config: WorldConfig = WorldConfig()
) -> Scene:
    """A random scene of `split` (see SPLITS; "heldout" is any held-out one), drawn uniformly
    over colours, shapes, sizes, relations and regions and kept only if it belongs to the split."""
    check_choice("split", split, SPLITS)
    if n_objects not in (None, 1, 2):
        raise ValueError(f"n_objects must be 1, 2 or None (random), got {n_objects!r}")
    if n_objects == 1 and split in ("heldout_relation", "heldout_both"):
        raise ValueError(f"a one-object scene cannot be in split {split!r}: it has no relation")
    if split in ("heldout_relation", "heldout_both"):
        n_objects = 2
    while True:
        n = n_objects or (2 if rng.random() < config.p_two_objects else 1)
        says_size = bool(rng.random() < config.p_says_size)
        if n == 1:
            region = _pick(rng, POSITIONS)
            anchor = np.asarray(POSITIONS[region][1]) + rng.uniform(-POSITION_JITTER, POSITION_JITTER, 2)
            objects, relation = (_draw_object(rng, tuple(map(float, anchor))),), None
            says_position = bool(rng.random() < config.p_says_position)
        else:
            relation = _pick(rng, RELATIONS)
            objects = tuple(_draw_object(rng, tuple(map(float, c))) for c in _pair_centres(rng, relation))
            says_position = False
            if _kind(objects[0]) == _kind(objects[1]):
                continue
        scene = Scene(objects, relation, says_size, says_position)
        if _in_split(scene.spec(), split):
            return scene


def sample_scenes(
    n: int, seed: int, split: str = "train", n_objects: int | None = None, config: WorldConfig = WorldConfig()
) -> list[Scene]:
    """`n` scenes of `split` drawn from a generator seeded with `seed`: the same list on every run."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, split, n_objects, config) for _ in range(n)]


def scene_for(spec: SceneSpec, rng: np.random.Generator) -> Scene:
    """A scene the caption is true of, drawn as the world draws its scenes: what the caption leaves open (size,
    region, exact place) at random. The study's oracle renders: a true image of a caption."""
    sizes = [o.size or _pick(rng, SIZES) for o in spec.objects]
    if len(spec.objects) == 1:
        region = spec.position or _pick(rng, POSITIONS)
        centres = [
            tuple(map(float, np.asarray(POSITIONS[region][1]) + rng.uniform(-POSITION_JITTER, POSITION_JITTER, 2)))
        ]
    else:
        centres = [tuple(map(float, c)) for c in _pair_centres(rng, spec.relation)]
    objects = tuple(
        SceneObject(o.colour, o.shape, size, centre, float(rng.uniform(1 - SCALE_JITTER, 1 + SCALE_JITTER)))
        for o, size, centre in zip(spec.objects, sizes, centres)
    )
    return Scene(
        objects, spec.relation, says_size=all(o.size for o in spec.objects), says_position=spec.position is not None
    )
