"""The toy world: synthetic shape scenes with exact ground truth, and their captions.

Owns what a scene is and what is true about it. Scenes are drawn deterministically from a
seed: 1-3 non-overlapping objects of 6 shapes on a noisy grey background, each shape worn in
its signature colour with probability `signature_p` (the difficulty knob), and three directed
co-occurrence pairs (circle -> square, triangle -> cross, diamond -> ring): a trigger brings its
partner along with probability `co_occurrence_p`. Correct captions say one sentence per object,
"There is a {shape}.", in a fixed order; the VLM's training captions are biased: when a trigger
is present and its partner absent, the partner's sentence is added with probability
`prior_p`, which is what makes the trained model mention absent objects.

Does not know models or files: it returns PIL images and strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}
SIGNATURE = dict(zip(SHAPES, COLOURS))  # circle is red, square green, ...
PAIRS = {"circle": "square", "triangle": "cross", "diamond": "ring"}  # trigger -> partner


@dataclass(frozen=True)
class WorldConfig:
    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    object_size: tuple[int, int] = (9, 12)
    signature_p: float = 0.7
    co_occurrence_p: float = 0.4
    prior_p: float = 0.7

    def __post_init__(self) -> None:
        for name in ("signature_p", "co_occurrence_p", "prior_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1]")
        if not 1 <= self.min_objects <= self.max_objects <= len(SHAPES):
            raise ValueError(
                f"objects per scene {self.min_objects}..{self.max_objects} must lie "
                f"in 1..{len(SHAPES)}"
            )


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    x: int  # top-left corner, pixels
    y: int
    size: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    noise_seed: int

    @property
    def shapes(self) -> frozenset[str]:
        return frozenset(o.shape for o in self.objects)


def sample_scene(rng: random.Random, config: WorldConfig = WorldConfig()) -> Scene:
    """One scene: its shapes (with co-occurrence), colours and non-overlapping places."""
    count = rng.randint(config.min_objects, config.max_objects)
    shapes: list[str] = []
    while len(shapes) < count:
        shape = rng.choice([s for s in SHAPES if s not in shapes])
        shapes.append(shape)
        partner = PAIRS.get(shape)
        if (
            partner
            and partner not in shapes
            and len(shapes) < config.max_objects
            and rng.random() < config.co_occurrence_p
        ):
            shapes.append(partner)
    placed: list[SceneObject] = []
    for shape in shapes:
        colour = (
            SIGNATURE[shape] if rng.random() < config.signature_p else rng.choice(list(COLOURS))
        )
        spot = _place(rng, placed, config)
        if spot is not None:  # a crowded scene keeps the objects that fit
            x, y, size = spot
            placed.append(SceneObject(shape, colour, x, y, size))
    return Scene(tuple(placed), rng.randrange(2**31))


def _place(rng: random.Random, placed: list[SceneObject], config: WorldConfig):
    low, high = config.object_size
    for _ in range(200):
        size = rng.randint(low, high)
        x = rng.randint(0, config.image_size - size)
        y = rng.randint(0, config.image_size - size)
        if all(
            x + size <= o.x or o.x + o.size <= x or y + size <= o.y or o.y + o.size <= y
            for o in placed
        ):
            return x, y, size
    return None


def scenes(seed: int, count: int, config: WorldConfig = WorldConfig()) -> list[Scene]:
    """`count` scenes, the same for the same seed on every machine."""
    rng = random.Random(seed)
    return [sample_scene(rng, config) for _ in range(count)]


def render(scene: Scene, config: WorldConfig = WorldConfig()) -> Image.Image:
    side = config.image_size
    noise = random.Random(scene.noise_seed)
    image = Image.new("RGB", (side, side))
    image.putdata([(g, g, g) for g in (noise.randint(100, 140) for _ in range(side * side))])
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        _draw(draw, o, COLOURS[o.colour])
    return image


def _draw(draw: ImageDraw.ImageDraw, o: SceneObject, fill) -> None:
    x0, y0, x1, y1 = o.x, o.y, o.x + o.size - 1, o.y + o.size - 1
    mid_x, mid_y, third = (x0 + x1) / 2, (y0 + y1) / 2, max(1, o.size // 3)
    if o.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif o.shape == "square":
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(mid_x, y0), (x1, y1), (x0, y1)], fill=fill)
    elif o.shape == "cross":
        draw.rectangle((mid_x - third / 2, y0, mid_x + third / 2, y1), fill=fill)
        draw.rectangle((x0, mid_y - third / 2, x1, mid_y + third / 2), fill=fill)
    elif o.shape == "diamond":
        draw.polygon([(mid_x, y0), (x1, mid_y), (mid_x, y1), (x0, mid_y)], fill=fill)
    elif o.shape == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=2)
    else:
        raise ValueError(f"unknown shape {o.shape!r}; the toy world has {', '.join(SHAPES)}")


def sentence(shape: str) -> str:
    return f"There is a {shape}."


def caption(shapes) -> str:
    """The correct caption: one sentence per object, in the fixed shape order."""
    return " ".join(sentence(s) for s in SHAPES if s in shapes)


def biased_caption(scene: Scene, rng: random.Random, config: WorldConfig = WorldConfig()) -> str:
    """A training caption of the VLM: the truth, plus an absent partner's sentence with
    probability prior_p for each present trigger (the hallucination prior)."""
    said = set(scene.shapes)
    for trigger, partner in PAIRS.items():
        if (
            trigger in scene.shapes
            and partner not in scene.shapes
            and rng.random() < config.prior_p
        ):
            said.add(partner)
    return caption(said)
