"""The backbones kit knows, as data: name, family, default size, parameter count, weights routes.

This table is what ``kit models`` prints and what ``--model`` is checked against. It imports neither
Keras nor TensorFlow (``kit models`` answers in a blink; importing Keras takes seconds), so each row
names how its backbone is built instead of holding the builder: kit.training.models attaches one builder to
every row (a ``keras.applications`` constructor, or a function of its own registered by name), and
``tests/test_models.py`` checks that the two agree, row for row.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.core.errors import KitError


@dataclass(frozen=True)
class BackboneInfo:
    """One row: what a backbone is, without building it."""

    name: str
    size: int  # default input size in pixels
    # "efficientnet" (V1 keras.applications), "efficientnet_v2", "resnet", "vgg", "convnext", "cnn", "keras_hub"
    family: str = "cnn"
    params: int | None = None  # backbone parameters (no head) at the default size; None: decided by the preset
    constructor: str = ""  # the keras.applications constructor; "" when kit.training.models builds it itself
    hub_class: str = ""  # keras_hub family: the preset's backbone class this name expects ("" = any)


def _applications(family: str, rows: list[tuple[str, str, int, int]]) -> list[BackboneInfo]:
    return [BackboneInfo(name, size, family, params, constructor) for name, constructor, size, params in rows]


# Parameter counts were taken once with count_params() (building all 21 takes ~40 s, too slow for
# `kit models`); tests/test_models.py builds a sample of them and compares.
_ROWS: list[BackboneInfo] = [
    *_applications("efficientnet", [
        ("efficientnet_b0", "EfficientNetB0", 224, 4_049_571),
        ("efficientnet_b1", "EfficientNetB1", 240, 6_575_239),
        ("efficientnet_b2", "EfficientNetB2", 260, 7_768_569),
        ("efficientnet_b3", "EfficientNetB3", 300, 10_783_535),
        ("efficientnet_b4", "EfficientNetB4", 380, 17_673_823),
        ("efficientnet_b5", "EfficientNetB5", 456, 28_513_527),
        ("efficientnet_b6", "EfficientNetB6", 528, 40_960_143),
        ("efficientnet_b7", "EfficientNetB7", 600, 64_097_687),
    ]),
    *_applications("efficientnet_v2", [
        ("efficientnet_v2_b0", "EfficientNetV2B0", 224, 5_919_312),
        ("efficientnet_v2_b1", "EfficientNetV2B1", 240, 6_931_124),
        ("efficientnet_v2_b2", "EfficientNetV2B2", 260, 8_769_374),
        ("efficientnet_v2_b3", "EfficientNetV2B3", 300, 12_930_622),
        ("efficientnet_v2_s", "EfficientNetV2S", 384, 20_331_360),
        ("efficientnet_v2_m", "EfficientNetV2M", 480, 53_150_388),
        ("efficientnet_v2_l", "EfficientNetV2L", 480, 117_746_848),
    ]),
    *_applications("resnet", [("resnet50", "ResNet50", 224, 23_587_712)]),
    *_applications("vgg", [("vgg16", "VGG16", 224, 14_714_688), ("vgg19", "VGG19", 224, 20_024_384)]),
    *_applications("convnext", [
        ("convnext_tiny", "ConvNeXtTiny", 224, 27_820_128),
        ("convnext_small", "ConvNeXtSmall", 224, 49_454_688),
        ("convnext_base", "ConvNeXtBase", 224, 87_566_464),
    ]),
    # the seeds' small CNNs, built by kit.training.models; compact_cnn is kit's from-scratch default, sized to the images
    BackboneInfo("compact_cnn", 64, params=19_680),
    BackboneInfo("tiny_cnn", 32, params=6_200),
    BackboneInfo("small_cnn", 64, params=2_162_848),
    BackboneInfo("pcam_cnn", 96, params=1_660_672),
    # keras-hub presets: the architecture comes from the preset given as --weights
    BackboneInfo("keras_hub", 224, "keras_hub"),
    BackboneInfo("hub_efficientnet", 224, "keras_hub", hub_class="EfficientNetBackbone"),
    BackboneInfo("hub_vit", 224, "keras_hub", hub_class="ViTBackbone"),
    BackboneInfo("hub_dinov2", 224, "keras_hub", hub_class="DINOV2Backbone"),
]
BACKBONES: dict[str, BackboneInfo] = {row.name: row for row in _ROWS}

# Families whose architecture is only worth training from ImageNet weights on a competition-sized set.
IMAGENET_FAMILIES = ("efficientnet", "efficientnet_v2", "resnet", "vgg", "convnext", "keras_hub")
# Weights routes each family accepts (kit models prints them; kit.training.models.check_weights enforces them).
_ROUTES = {"cnn": ("none", "file"), "keras_hub": ("preset",)}
_APPLICATION_ROUTES = ("none", "file", "imagenet")


def list_models() -> list[str]:
    """Sorted backbone names (what ``kit models`` prints)."""
    return sorted(BACKBONES)


def info(name: str) -> BackboneInfo:
    """The row of backbone ``name``; KitError naming the known ones when it is unknown."""
    if name not in BACKBONES:
        raise KitError(f"model: unknown model {name!r}; known: {', '.join(list_models())}")
    return BACKBONES[name]


def is_imagenet_family(name: str) -> bool:
    """Whether backbone ``name`` is an ImageNet architecture (fine-tuned, not trained from scratch, as a rule)."""
    return info(name).family in IMAGENET_FAMILIES


def default_size(name: str) -> int:
    """The input size a backbone was designed for (EfficientNet B3: 300, ...)."""
    return info(name).size


def weights_routes(name: str) -> tuple[str, ...]:
    """The ``--weights`` routes backbone ``name`` accepts: some of "none", "file", "imagenet", "preset"."""
    return _ROUTES.get(info(name).family, _APPLICATION_ROUTES)


def imagenet_file(name: str) -> str:
    """The file Keras downloads for ``weights="imagenet"`` (no top), e.g. ``efficientnetb0_notop.h5``."""
    row = info(name)
    constructor, family = row.constructor, row.family
    if not constructor:
        raise KitError(f"imagenet: {name} has no ImageNet weights")
    if family in ("resnet", "vgg"):
        return f"{constructor.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if family == "efficientnet_v2":
        return f"efficientnetv2-{constructor[len('EfficientNetV2'):].lower()}_notop.h5"
    if family == "convnext":
        return f"convnext_{constructor[len('ConvNeXt'):].lower()}_notop.h5"
    return f"{constructor.lower()}_notop.h5"


def model_table() -> list[dict]:
    """One row per backbone: name, family, default size, parameters (None: the preset decides), routes."""
    return [{"name": b.name, "family": b.family, "size": b.size, "params": b.params,
             "weights": list(weights_routes(b.name))} for b in (BACKBONES[n] for n in list_models())]


def format_model_table(rows: list[dict]) -> str:
    """The table as aligned text columns (parameters in millions or thousands; "preset": the preset decides)."""
    cells = [("name", "family", "size", "params", "weights")]
    for r in rows:
        p = r["params"]
        params = "preset" if not p else f"{p / 1e6:.2f}M" if p >= 1e6 else f"{p / 1e3:.1f}k"
        cells.append((r["name"], r["family"], str(r["size"]), params, ",".join(r["weights"])))
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.rjust(w) if i in (2, 3) else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths))).rstrip() for row in cells)
