"""Quantized precisions in the harness's ``hf`` backend: what each needs, and 8bit/4bit under transformers 5.

The reference evaluated 8bit and 4bit requests with ``load_in_8bit=True`` / ``load_in_4bit=True`` among the
model arguments; transformers 4 turned those into ``BitsAndBytesConfig(load_in_8bit=True)`` (4bit: its
defaults, fp4), transformers 5 refuses them (``unexpected keyword argument 'load_in_8bit'``) and takes only a
``quantization_config``. ``QuantizedHFLM`` is lm-eval's HFLM taking the same model arguments and passing the
equivalent BitsAndBytesConfig, so the recorded model arguments stay the reference's and the weights are
quantized as they were. GPTQ repositories carry their ``quantization_config`` in config.json, which lm-eval
and transformers read on their own (with optimum and gptqmodel installed).

Imported by the runner's child only (it imports lm-eval).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import get_dtype

from backend.domain import Precision
from backend.errors import PrecisionUnavailable

#: The model arguments transformers 4 read into a BitsAndBytesConfig.
BITSANDBYTES_ARGUMENTS = (
    "load_in_8bit",
    "load_in_4bit",
    "llm_int8_threshold",
    "bnb_4bit_quant_type",
    "bnb_4bit_compute_dtype",
    "bnb_4bit_use_double_quant",
)
#: The packages each quantized precision loads with (import names), and how to install them.
REQUIRED_PACKAGES: dict[Precision, tuple[tuple[str, ...], str]] = {
    Precision.INT8: (("bitsandbytes",), "pip install bitsandbytes (a dependency of the project)"),
    Precision.INT4: (("bitsandbytes",), "pip install bitsandbytes (a dependency of the project)"),
    Precision.GPTQ: (("optimum", "gptqmodel"), "pip install '.[gptq]' (optimum and gptqmodel)"),
}


def check_precision_available(precision: Precision) -> None:
    """Refuse, before any model is loaded, a precision whose quantization library is not installed."""
    packages, install = REQUIRED_PACKAGES.get(precision, ((), ""))
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise PrecisionUnavailable(
            f"{precision} weights load with {', '.join(packages)}, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed on the evaluation machine: {install}"
        )


def uses_bitsandbytes(model_args: dict[str, Any]) -> bool:
    return any(key in model_args for key in BITSANDBYTES_ARGUMENTS)


def bitsandbytes_config(arguments: dict[str, Any]) -> Any:
    """The BitsAndBytesConfig that transformers 4 built from these model arguments."""
    from transformers import BitsAndBytesConfig

    values = dict(arguments)
    if isinstance(values.get("bnb_4bit_compute_dtype"), str):
        values["bnb_4bit_compute_dtype"] = get_dtype(values["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**values)


class QuantizedHFLM(HFLM):
    """lm-eval's HFLM, with ``load_in_8bit`` / ``load_in_4bit`` model arguments as transformers 4 read them."""

    def _create_model(
        self, pretrained: Any, *args: Any, quantization_config: Any = None, **kwargs: Any
    ) -> None:
        flags = {key: kwargs.pop(key) for key in BITSANDBYTES_ARGUMENTS if key in kwargs}
        if flags:
            if quantization_config is not None:
                raise ValueError(
                    "the model's config.json declares a quantization_config and the request asks for "
                    f"{', '.join(flags)}: a repository is quantized one way only"
                )
            quantization_config = bitsandbytes_config(flags)
        super()._create_model(pretrained, *args, quantization_config=quantization_config, **kwargs)
