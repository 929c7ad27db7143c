"""Architecture of a base-model folder, read from its config and safetensors headers only.

The linear modules (name -> (out_features, in_features)) are what a LoRA adapter must match,
and their sorted list, with every other weight's shape, is the base version's fingerprint:
two versions with equal fingerprints take the same adapters.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from adapters.format.safetensors_header import read_header
from adapters.errors import InvalidRequestError


@dataclass(frozen=True)
class BaseArchitecture:
    model_type: str
    weights: dict[str, tuple[int, ...]]  # every weight name -> shape
    linear_modules: dict[str, tuple[int, int]]  # module name -> (out_features, in_features)

    @property
    def fingerprint(self) -> str:
        listing = json.dumps(sorted((k, list(v)) for k, v in self.weights.items()))
        return hashlib.sha256(f"{self.model_type}\n{listing}".encode()).hexdigest()

    def to_json(self) -> dict:
        return {
            "model_type": self.model_type,
            "linear_modules": {k: list(v) for k, v in self.linear_modules.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "BaseArchitecture":
        linear = {k: tuple(v) for k, v in data["linear_modules"].items()}
        return cls(data["model_type"], {f"{k}.weight": v for k, v in linear.items()}, linear)


def read_architecture(folder: Path) -> BaseArchitecture:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidRequestError(f"{folder} has no config.json; not a Hugging Face model folder")
    model_type = json.loads(config_path.read_text()).get("model_type", "unknown")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidRequestError(f"{folder} has no *.safetensors weights")
    weights: dict[str, tuple[int, ...]] = {}
    for f in files:
        for name, info in read_header(f).tensors.items():
            weights[name] = info.shape
    # A 2-D ``<module>.weight`` outside the embeddings is a linear layer a LoRA can target.
    linear = {
        name.removesuffix(".weight"): (shape[0], shape[1])
        for name, shape in weights.items()
        if name.endswith(".weight") and len(shape) == 2 and "embed" not in name and "lm_head" not in name
    }
    return BaseArchitecture(model_type, weights, linear)
