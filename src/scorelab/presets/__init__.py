"""Presets: JSON files shaped like a run's config.json, whole or in part.

`scorelab train --config NAME` takes a preset by name (`--config digits`), or any JSON file by
path (`--config configs/digits.json` in the repository, where configs/ is this folder). Flags
given with it override it. `images.json` holds the settings an image run gets when no flag or
file sets them: chosen by measurement for time-to-quality on a 2-core CPU (the digits benchmark,
benchmarks/digits.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scorelab.config import overrides_from_dict
from scorelab.errors import ScorelabError

FOLDER = Path(__file__).resolve().parent
# the defaults of an image run (scorelab train on image data without --model vae)
IMAGE_DEFAULTS = "images"


def preset_names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def config_file_overrides(spec: str | Path) -> dict[str, Any]:
    """The dotted-key overrides of a preset name or a JSON file path, or a one-line error."""
    path = Path(spec)
    if not path.exists() and path.suffix == "" and (FOLDER / f"{path.name}.json").is_file():
        path = FOLDER / f"{path.name}.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScorelabError(
            f"--config {spec}: no such file or preset (presets: {', '.join(preset_names())})"
        ) from None
    except OSError as e:
        raise ScorelabError(f"--config {spec}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScorelabError(f"--config {spec} is not valid JSON: {e}") from None
    return overrides_from_dict(d, source=f"--config {spec}")


def image_defaults() -> dict[str, Any]:
    """The dotted-key settings an image run gets unless a flag or a config file sets them."""
    return config_file_overrides(FOLDER / f"{IMAGE_DEFAULTS}.json")


__all__ = ["FOLDER", "config_file_overrides", "image_defaults", "preset_names"]
