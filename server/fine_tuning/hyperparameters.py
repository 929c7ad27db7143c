"""Map a fine-tuning request's hyperparameters (OpenAI's names plus ours) to a TrainingConfig.

OpenAI's ``n_epochs``, ``batch_size`` and ``learning_rate_multiplier`` (each may be "auto"),
and our ``method`` (lora | trans-peft | beamlora | light-peft, the last two also +trans-peft), ``p_m``, ``p_c``, ``rank``, ``learning_rate`` and the
other TrainingConfig fields. Anything else is refused, naming the key.
"""

from typing import Any

from pydantic import ValidationError

from adapters.training.config import TrainingConfig
from adapters.errors import InvalidRequestError

DEFAULT_LR = TrainingConfig.model_fields["learning_rate"].default


def _fail(message: str, param: str = "hyperparameters") -> InvalidRequestError:
    return InvalidRequestError(message, code="invalid_hyperparameters", param=param)


def training_config(hyperparameters: dict[str, Any] | None, method: dict[str, Any] | None,
                    seed: int | None, inherit: dict[str, Any] | None = None) -> TrainingConfig:
    """``inherit``: values used where the request is silent (a continued adapter's rank and targets)."""
    values = dict(hyperparameters or {})
    if method is not None:
        if method.get("type") != "supervised":
            raise _fail(f"method.type {method.get('type')!r} is not supported; accepted: 'supervised' "
                        "(choose the training method with hyperparameters.method)", "method")
        supervised = method.get("supervised") or {}
        nested = supervised.get("hyperparameters") if isinstance(supervised, dict) else None
        if not isinstance(supervised, dict) or not isinstance(nested or {}, dict):
            raise _fail("method.supervised must be an object like {\"hyperparameters\": {...}}", "method.supervised")
        values.update(nested or {})
    values = {k: v for k, v in values.items() if v != "auto"}
    if "learning_rate_multiplier" in values:
        multiplier = values.pop("learning_rate_multiplier")
        if not isinstance(multiplier, (int, float)) or multiplier <= 0:
            raise _fail(f"learning_rate_multiplier must be a positive number, got {multiplier!r}")
        values.setdefault("learning_rate", DEFAULT_LR * multiplier)
    if seed is not None:
        values["seed"] = seed
    for key, value in (inherit or {}).items():
        values.setdefault(key, value)
    try:
        return TrainingConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(map(str, first["loc"]))
        if first["type"] == "extra_forbidden":
            known = sorted([*TrainingConfig.model_fields, "learning_rate_multiplier"])
            raise _fail(f"unknown hyperparameter {key!r}; accepted: {known}", f"hyperparameters.{key}") from None
        raise _fail(f"hyperparameters.{key}: {first['msg']}", f"hyperparameters.{key}") from None
