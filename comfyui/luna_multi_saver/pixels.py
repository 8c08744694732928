"""Image arrays: torch tensors or numpy arrays in, numpy views out (torch is never imported), and ComfyUI's exact
float-to-uint8 conversion."""

from __future__ import annotations

import numpy as np

SUPPORTED_CHANNELS = (1, 3, 4)


def as_numpy(images: object) -> np.ndarray:
    """A numpy view of a CPU torch tensor (no copy), a numpy array as is, or ``np.asarray`` of anything else.
    Tensors on a GPU are copied to the CPU; dtypes numpy lacks (bfloat16) are widened to float32."""
    if isinstance(images, np.ndarray):
        return images
    if hasattr(images, "detach") and hasattr(images, "cpu"):
        tensor = images.detach().cpu()
        try:
            return tensor.numpy()
        except (TypeError, RuntimeError):
            return tensor.float().numpy()
    return np.asarray(images)


def as_batch(images: object) -> np.ndarray:
    """``[B, H, W, C]`` (a single ``[H, W, C]`` or ``[H, W]`` image becomes a batch of one), C in 1, 3, 4."""
    array = as_numpy(images)
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected images shaped [B, H, W, C], got shape {tuple(array.shape)}")
    if array.shape[3] not in SUPPORTED_CHANNELS:
        raise ValueError(f"images have {array.shape[3]} channels; 1 (gray), 3 (RGB) or 4 (RGBA) are supported")
    if array.shape[1] < 1 or array.shape[2] < 1:
        raise ValueError(f"images of shape {tuple(array.shape)} have no pixels")
    return array


def to_uint8(image: np.ndarray) -> np.ndarray:
    """ComfyUI's conversion, ``np.clip(255. * x, 0, 255).astype(np.uint8)`` in float32; uint8 is taken as is and
    uint16 is scaled by 1/65535 first (as the daemon does)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        x = image.astype(np.float32) / np.float32(65535.0)
    else:
        x = image.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        return np.clip(255.0 * x, 0, 255).astype(np.uint8)


def images_of(images: object) -> list[np.ndarray]:
    """The ``[H, W, C]`` images of a batch ``[B, H, W, C]`` (array or tensor), or of a list of single images
    (which may differ in size and dtype)."""
    if isinstance(images, (list, tuple)):
        return [as_batch(image)[0] for image in images]
    batch = as_batch(images)
    return [batch[i] for i in range(batch.shape[0])]


def to_uint16(image: np.ndarray) -> np.ndarray:
    """16-bit samples from the samples as given (PROTOCOL.md 10.7, as the daemon and ComfyUI core's 16-bit save):
    float ``clip(65535 * x, 0, 65535)`` in float32, truncated (NaN gives 0); uint8 ``257 * v``; uint16 as is."""
    if image.dtype == np.uint16:
        return image
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * np.uint16(257)
    with np.errstate(invalid="ignore"):
        y = np.float32(65535.0) * image.astype(np.float32, copy=False)
        y = np.where(np.isnan(y), np.float32(0), y)
        return np.clip(y, 0, 65535).astype(np.uint16)


def to_float32(image: np.ndarray) -> np.ndarray:
    """Float samples (what EXR stores before the colour transform): float as is (unclamped), uint8 ``v / 255``,
    uint16 ``v / 65535`` in float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    return image.astype(np.float32, copy=False)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The inverse sRGB transfer function in float32: ``x <= 0.04045`` gives ``x / 12.92``, above it
    ``((x + 0.055) / 1.055) ** 2.4``; NaN stays NaN (the daemon's formula; results agree within 1e-6 relative)."""
    x = x.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        high = np.power((x + np.float32(0.055)) / np.float32(1.055), np.float32(2.4))
        return np.where(x <= np.float32(0.04045), x / np.float32(12.92), high).astype(np.float32)
