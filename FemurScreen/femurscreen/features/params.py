"""The versioned pyradiomics parameter file and the names of the features it produces.

A feature name is ``<image type>_<class>_<feature>`` exactly as pyradiomics writes it, e.g.
``original_firstorder_Mean``, ``log-sigma-1-0-mm-3D_glcm_Contrast`` or
``wavelet-LLH_glszm_ZoneEntropy``. The fast path reads a model's feature list with
:func:`plan_features` to know which filters and feature classes it must run, and the feature
table is sorted with :func:`feature_sort_key` so that columns always come in pyradiomics' order.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from femurscreen.errors import InputError
from femurscreen.resources import resource_path

DEFAULT_PARAMS_NAME = "femurscreen_radiomics_v1.yaml"

# Order in which pyradiomics computes the classes: shape first (it runs on the mask alone), then
# the classes in the order of the parameter file's ``featureClass`` section (ours follows this).
CLASS_ORDER: tuple[str, ...] = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

# Sub-bands in the order pyradiomics yields them (pywt.swtn detail keys, then the approximation).
WAVELET_BANDS: tuple[str, ...] = ("LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH", "LLL")

# Image types whose filter yields exactly one image with a fixed name.
_SINGLE_IMAGE_TYPES: dict[str, str] = {
    "original": "Original",
    "square": "Square",
    "squareroot": "SquareRoot",
    "logarithm": "Logarithm",
    "exponential": "Exponential",
    "gradient": "Gradient",
}
_WAVELET_RE = re.compile(r"^wavelet(\d*)-([LH]+)$")
_LOG_RE = re.compile(r"^log-sigma-(.+)-mm-3D$")


def quiet_pyradiomics() -> None:
    """Keep pyradiomics (and its schema checker) to warnings and errors on stderr.

    Its INFO lines ("Computing glcm"...) would drown our progress lines once the CLI configures
    the root logger; the clear per-side messages are in our rows. ``-v`` keeps everything.
    """
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("radiomics").setLevel(logging.WARNING)
        logging.getLogger("pykwalify").setLevel(logging.WARNING)
    # "GLCM is symmetrical, therefore Sum Average = 2 * Joint Average" once per image: noise.
    logging.getLogger("radiomics.glcm").setLevel(logging.ERROR)


def default_params_path() -> Path:
    """The shipped parameter file (Resources/Radiomics/femurscreen_radiomics_v1.yaml)."""
    return resource_path("Radiomics", DEFAULT_PARAMS_NAME)


def resolve_params(params: str | Path | None) -> Path:
    """``params`` as an existing file, the shipped file when None; a clear error otherwise."""
    if params is None:
        return default_params_path()
    path = Path(params)
    if not path.is_file():
        raise InputError(
            "pyradiomics parameter file not found",
            "pass an existing .yaml file, or leave --params out to use the shipped "
            f"{DEFAULT_PARAMS_NAME}",
            path=path,
        )
    return path


def params_sha256(path: str | Path) -> str:
    """sha256 of the parameter file's bytes: the identity of an extraction, stored by models."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_extractor(params: str | Path):
    """A fresh pyradiomics extractor configured by ``params`` (validated against its schema).

    Schema validation costs ~70 ms, so each file is validated once per process (keyed by its
    path and bytes) and callers get an independent deep copy they may reconfigure.
    """
    quiet_pyradiomics()
    path = Path(params)
    return copy.deepcopy(_validated_extractor(str(path), params_sha256(path)))


@functools.lru_cache(maxsize=8)
def _validated_extractor(path: str, sha: str):
    from radiomics import featureextractor

    del sha  # part of the cache key only: an edited file is validated again
    try:
        return featureextractor.RadiomicsFeatureExtractor(path)
    except Exception as exc:  # pykwalify raises its own SchemaError types
        raise InputError(
            f"not a valid pyradiomics parameter file ({exc})",
            "fix the file against pyradiomics' parameter schema or use the shipped one",
            path=path,
        ) from exc


def class_feature_names(feature_class: str) -> list[str]:
    """Feature names of a pyradiomics class in the order pyradiomics computes them."""
    from radiomics import getFeatureClasses

    return list(getFeatureClasses()[feature_class].getFeatureNames())


def log_image_name(sigma: float) -> str:
    """pyradiomics' name of the LoG image of ``sigma`` mm (``log-sigma-1-0-mm-3D``)."""
    sigma_text = str(sigma).replace(".", "-")
    return f"log-sigma-{sigma_text}-mm-3D"


def image_type_of(image_name: str) -> str | None:
    """The pyradiomics image type (``Original``, ``LoG``, ``Wavelet``...) of ``image_name``."""
    if image_name in _SINGLE_IMAGE_TYPES:
        return _SINGLE_IMAGE_TYPES[image_name]
    if _LOG_RE.match(image_name):
        return "LoG"
    if _WAVELET_RE.match(image_name):
        return "Wavelet"
    if image_name.startswith("lbp-2D"):
        return "LBP2D"
    if image_name.startswith("lbp-3D"):
        return "LBP3D"
    return None


def split_feature_name(name: str) -> tuple[str, str, str]:
    """``(image name, class, feature)`` of a pyradiomics feature name; ValueError if malformed."""
    parts = name.split("_")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{name!r} is not a pyradiomics feature name (imagetype_class_feature)")
    return parts[0], parts[1], parts[2]


def _image_rank(image_name: str) -> tuple:
    kind = image_type_of(image_name)
    if kind == "Original":
        return (0, 0.0, 0, "")
    if kind == "LoG":
        log_match = _LOG_RE.match(image_name)
        assert log_match is not None  # image_type_of said LoG
        sigma_text = log_match.group(1).replace("-", ".")
        try:
            return (1, float(sigma_text), 0, "")
        except ValueError:
            return (1, float("inf"), 0, image_name)
    if kind == "Wavelet":
        wavelet_match = _WAVELET_RE.match(image_name)
        assert wavelet_match is not None  # image_type_of said Wavelet
        level_text, band = wavelet_match.groups()
        level = int(level_text) if level_text else 1
        band_rank = WAVELET_BANDS.index(band) if band in WAVELET_BANDS else len(WAVELET_BANDS)
        return (2, float(level), band_rank, image_name)
    return (3, 0.0, 0, image_name)


_FEATURE_INDEX: dict[str, dict[str, int]] = {}


def _feature_rank(feature_class: str, feature: str) -> tuple[int, int, str]:
    if feature_class not in CLASS_ORDER:
        return (len(CLASS_ORDER), 0, feature_class + "_" + feature)
    if feature_class not in _FEATURE_INDEX:
        names = class_feature_names(feature_class)
        _FEATURE_INDEX[feature_class] = {n: i for i, n in enumerate(names)}
    index = _FEATURE_INDEX[feature_class].get(feature, len(_FEATURE_INDEX[feature_class]))
    return (CLASS_ORDER.index(feature_class), index, feature)


def feature_sort_key(name: str) -> tuple:
    """Sort key for pyradiomics' own output order (shape, then image by image, class by class)."""
    try:
        image_name, feature_class, feature = split_feature_name(name)
    except ValueError:
        return (9, (), (), name)
    if feature_class == "shape":
        return (0, (), _feature_rank(feature_class, feature), name)
    return (1, _image_rank(image_name), _feature_rank(feature_class, feature), name)


def sort_features(names: Iterable[str]) -> list[str]:
    """Feature names in pyradiomics order (the column order of every feature table)."""
    return sorted(set(names), key=feature_sort_key)


@dataclass
class FeaturePlan:
    """What the fast path must compute for a list of feature names.

    ``image_types`` is the argument for ``extractor.enableImageTypes`` (only the filters needed,
    LoG with only the sigmas needed); ``by_image`` maps a pyradiomics image name to
    ``{class: [features]}`` so that each filtered image runs only its own classes; ``classes``
    is the union (the argument for ``extractor.enableFeaturesByName``).
    """

    features: list[str]
    image_types: dict[str, dict] = field(default_factory=dict)
    by_image: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)


def _params_image_names(extractor) -> dict[str, set[str] | None]:
    """Image names each enabled image type of ``extractor`` yields (None: not enumerable)."""
    names: dict[str, set[str] | None] = {}
    settings = extractor.settings
    for image_type, custom in extractor.enabledImagetypes.items():
        args = {**settings, **(custom or {})}
        if image_type == "Original":
            names[image_type] = {"original"}
        elif image_type == "LoG":
            names[image_type] = {log_image_name(s) for s in args.get("sigma", [])}
        elif image_type == "Wavelet":
            levels = int(args.get("level", 1))
            bands: set[str] = set()
            for idx in range(1, levels + 1):
                prefix = "wavelet" if idx == 1 else f"wavelet{idx}"
                bands.update(f"{prefix}-{b}" for b in WAVELET_BANDS[:-1])
            last = "wavelet" if levels == 1 else f"wavelet{levels}"
            bands.add(f"{last}-LLL")
            names[image_type] = bands
        elif image_type in _SINGLE_IMAGE_TYPES.values():
            names[image_type] = {k for k, v in _SINGLE_IMAGE_TYPES.items() if v == image_type}
        else:
            names[image_type] = None
    return names


def plan_features(only: Sequence[str], params: str | Path, extractor=None) -> FeaturePlan:
    """Check that ``params`` produces every name in ``only`` and work out the minimal extraction.

    Raises InputError naming the features that this parameter file cannot produce (a model
    trained with another file, or a typo in a feature list).
    """
    extractor = extractor if extractor is not None else make_extractor(params)
    producible = _params_image_names(extractor)
    enabled_classes = extractor.enabledFeatures
    plan = FeaturePlan(features=sort_features(only))
    bad: list[str] = []
    for name in plan.features:
        try:
            image_name, feature_class, feature = split_feature_name(name)
        except ValueError:
            bad.append(name)
            continue
        image_type = image_type_of(image_name)
        names = producible.get(image_type, set()) if image_type else set()
        known_image = names is None or image_name in names
        known_feature = feature_class in enabled_classes and feature in _class_names(feature_class)
        listed = enabled_classes.get(feature_class)
        if listed:  # the file enables a subset of this class
            known_feature = known_feature and feature in listed
        elif known_feature:  # "all" leaves out deprecated features: so must we
            known_feature = not _class_deprecated(feature_class).get(feature, True)
        if feature_class == "shape" and image_name != "original":
            known_image = False
        if not (known_image and known_feature):
            bad.append(name)
            continue
        plan.by_image.setdefault(image_name, {}).setdefault(feature_class, []).append(feature)
        plan.classes.setdefault(feature_class, [])
        if feature not in plan.classes[feature_class]:
            plan.classes[feature_class].append(feature)
        assert image_type is not None  # an unknown image type was refused above
        custom = dict(extractor.enabledImagetypes.get(image_type) or {})
        if image_type == "LoG":
            sigmas = plan.image_types.get("LoG", {}).get("sigma", [])
            all_sigmas = {**extractor.settings, **custom}.get("sigma", [])
            sigma = next(s for s in all_sigmas if log_image_name(s) == image_name)
            if sigma not in sigmas:
                sigmas = sorted([*sigmas, sigma], key=all_sigmas.index)
            custom["sigma"] = sigmas
        if feature_class != "shape":
            plan.image_types[image_type] = custom
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise InputError(
            f"{len(bad)} requested feature(s) are not produced by this parameter file: {shown}",
            "use the parameter file the model was trained with, and pyradiomics feature names "
            "(imagetype_class_feature, e.g. original_firstorder_Mean)",
            path=params,
        )
    return plan


def _class_deprecated(feature_class: str) -> dict[str, bool]:
    from radiomics import getFeatureClasses

    return dict(getFeatureClasses()[feature_class].getFeatureNames())


def _class_names(feature_class: str) -> set[str]:
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    return set(classes[feature_class].getFeatureNames()) if feature_class in classes else set()


def read_feature_list(value: str | Path) -> list[str]:
    """Feature names from a comma list, a text file (one per line or commas, ``#`` comments), or
    a JSON file holding a list or an object with ``features`` / ``feature_names`` (a manifest)."""
    path = Path(str(value))
    if not path.is_file():
        if any(sep in str(value) for sep in ("/", "\\")) or str(value).endswith(
            (".txt", ".json", ".csv")
        ):
            raise InputError("feature list file not found", "check the path", path=path)
        names = [n.strip() for n in str(value).split(",") if n.strip()]
    elif path.suffix.lower() == ".json":
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"not valid JSON ({exc})", "fix the feature list", path=path) from exc
        if isinstance(data, dict):
            data = next(
                (data[k] for k in ("features", "feature_names", "feature_list") if k in data), None
            )
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise InputError(
                "JSON feature list must be a list of names or hold one under 'features'",
                'write e.g. ["original_firstorder_Mean", ...]',
                path=path,
            )
        names = [n.strip() for n in data if n.strip()]
    else:
        names = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0]
            names.extend(n.strip() for n in line.split(",") if n.strip())
    if not names:
        raise InputError("the feature list is empty", "name at least one feature", path=path)
    return list(dict.fromkeys(names))
