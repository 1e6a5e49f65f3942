"""The transformers model itself: float32 (the reference), bfloat16 or float16, on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch

from search.model.backends.base import BackendUnavailable, RuntimeChoice

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """bfloat16 is only fast on CPUs with bf16 instructions (AVX512-BF16, AMX); elsewhere it is emulated
    and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class TorchBackend:
    def __init__(self, model: torch.nn.Module, choice: RuntimeChoice) -> None:
        # The logit scale and bias are read while the weights are still float32: in bfloat16,
        # exp(logit_scale) of 10 would become 9.94.
        with torch.inference_mode():
            self.logit_scale = float(model.logit_scale.float().exp().item())
            self.logit_bias = float(model.logit_bias.float().item())
        self.choice = choice
        self.device = torch.device(choice.device)
        self.dtype = DTYPES[choice.precision]
        self.model = model.to(choice.device, self.dtype).eval()

    @classmethod
    def load(cls, model_id: str, choice: RuntimeChoice) -> TorchBackend:
        from transformers import SiglipModel

        if choice.precision not in DTYPES:
            raise BackendUnavailable(f"torch runs float32, bfloat16 or float16, not {choice.precision}")
        return cls(SiglipModel.from_pretrained(model_id, dtype=torch.float32), choice)

    def _to_device(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            # Page-locked memory lets the copy run asynchronously with the previous batch's compute.
            tensor = tensor.pin_memory()
        return tensor.to(self.device, dtype=dtype, non_blocking=True)

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            features = self.model.get_image_features(pixel_values=self._to_device(pixels, self.dtype))
            return features.pooler_output.float().cpu().numpy()

    def text_features(self, input_ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            features = self.model.get_text_features(input_ids=self._to_device(input_ids))
            return features.pooler_output.float().cpu().numpy()
