"""Image operations shared by the families of every modality.

Each op takes a float01 (H, W, C) image and keyword parameters exactly as a family's
`sample_params` records them, and is deterministic: noise comes from a recorded
`noise_seed`. The filters themselves are scipy.ndimage / skimage / PIL.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit
from skimage.util import random_noise


def _clip(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


# --- noise ---------------------------------------------------------------------------------


def gaussian_noise(img: np.ndarray, *, sigma: float, noise_seed: int) -> np.ndarray:
    return _clip(random_noise(img, mode="gaussian", var=sigma**2, rng=noise_seed))


def speckle_noise(img: np.ndarray, *, sigma: float, noise_seed: int) -> np.ndarray:
    """Multiplicative noise img * (1 + n): strongest where the signal is."""
    return _clip(random_noise(img, mode="speckle", var=sigma**2, rng=noise_seed))


def impulse_noise(img: np.ndarray, *, amount: float, noise_seed: int) -> np.ndarray:
    """Salt-and-pepper: a fraction `amount` of pixels set to 0 or 1."""
    return _clip(random_noise(img, mode="s&p", amount=amount, rng=noise_seed))


def shot_noise(img: np.ndarray, *, photons: float, noise_seed: int) -> np.ndarray:
    """Poisson photon-count noise with `photons` counts at full scale (fewer = noisier)."""
    rng = np.random.default_rng(noise_seed)
    return _clip(rng.poisson(img * photons) / photons)


def gamma_speckle(img: np.ndarray, *, looks: float, noise_seed: int) -> np.ndarray:
    """Fully developed OCT speckle: multiplicative unit-mean Gamma noise with `looks` looks."""
    rng = np.random.default_rng(noise_seed)
    return _clip(img * rng.gamma(looks, 1.0 / looks, size=img.shape[:2])[..., None])


# --- blur ----------------------------------------------------------------------------------


def gaussian_blur(img: np.ndarray, *, sigma_px: float) -> np.ndarray:
    return ndimage.gaussian_filter(img, sigma=(sigma_px, sigma_px, 0), mode="reflect")


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """FFT convolution of every channel with a normalised kernel, reflecting at the borders."""
    from scipy import signal  # 0.4 s to import: only when a blur needs it

    kernel = kernel / kernel.sum()
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(img, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    out = signal.fftconvolve(padded, kernel[..., None], mode="valid", axes=(0, 1))
    return _clip(out[: img.shape[0], : img.shape[1]])


def motion_blur(img: np.ndarray, *, length_px: float, angle_deg: float) -> np.ndarray:
    """Linear camera/patient motion: a line kernel of `length_px` at `angle_deg`.

    The line is sampled every 1/8 px and splatted bilinearly, so the kernel changes smoothly
    with the length, even below a pixel (small images get proportionally short lengths).
    """
    half = int(np.ceil(length_px / 2)) + 1
    t = np.linspace(-length_px / 2, length_px / 2, int(np.ceil(8 * length_px)) + 1)
    xs = half + t * np.cos(np.deg2rad(angle_deg))
    ys = half + t * np.sin(np.deg2rad(angle_deg))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((2 * half + 2, 2 * half + 2), np.float64)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), wgt)
    return _convolve(img, kernel[:-1, :-1].astype(np.float32))


def defocus_blur(img: np.ndarray, *, radius_px: float) -> np.ndarray:
    """Out-of-focus optics: a pillbox of `radius_px` with a quarter-pixel soft edge, so that
    sub-pixel radii still blur a little and the blur grows smoothly with the radius."""
    half = int(np.ceil(radius_px)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = expit((radius_px - np.hypot(yy, xx)) / 0.25).astype(np.float32)
    return _convolve(img, kernel)


# --- intensity -----------------------------------------------------------------------------


def brightness(img: np.ndarray, *, delta: float) -> np.ndarray:
    return _clip(img + delta)


def contrast(img: np.ndarray, *, factor: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale deviations from the mean level (inside `mask` if given) by `factor`."""
    mean = img.mean(axis=(0, 1), keepdims=True) if mask is None else img[mask].mean(axis=0)
    return _clip((img - mean) * factor + mean)


def gamma(img: np.ndarray, *, gamma: float) -> np.ndarray:
    return _clip(np.power(img, gamma))


def saturation(img: np.ndarray, *, factor: float) -> np.ndarray:
    """Blend with the grey image, as PIL's ImageEnhance.Color does."""
    if img.shape[2] == 1:
        return img
    grey = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return _clip(grey + (img - grey) * factor)


def contrast_loss(img: np.ndarray, *, factor: float, floor: float) -> np.ndarray:
    """Washed-out scan: contrast towards a raised background level (OCT signal loss)."""
    return _clip(floor + img * factor * (1.0 - floor))


# --- resampling and coding -----------------------------------------------------------------


def jpeg(img: np.ndarray, *, quality: int) -> np.ndarray:
    """Encode and decode as JPEG in memory at `quality` (PIL, 4:2:0 for colour)."""
    u8 = np.rint(img * 255).astype(np.uint8)
    pil = Image.fromarray(u8[..., 0] if u8.shape[2] == 1 else u8)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
    return out.reshape(img.shape)


def pixelate(img: np.ndarray, *, factor: float) -> np.ndarray:
    """Box-downsample by `factor`, then nearest-neighbour back up (a low-resolution scan)."""
    h, w = img.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    chans = [
        np.asarray(Image.fromarray(img[..., c], mode="F").resize(small, Image.BOX).resize((w, h), Image.NEAREST))
        for c in range(img.shape[2])
    ]
    return _clip(np.stack(chans, axis=-1))


# --- CT reconstruction artefacts -----------------------------------------------------------


def streak(img: np.ndarray, *, centre: list[float], angles_deg: list[float], amplitudes: list[float],
           width_px: float) -> np.ndarray:
    """Metal/beam-hardening streaks: bright and dark lines through a dense point `centre` (x, y)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - centre[0] * w, yy - centre[1] * h
    field = np.zeros((h, w), np.float32)
    for angle, amp in zip(angles_deg, amplitudes):
        t = np.deg2rad(angle)
        dist = np.abs(dx * np.sin(t) - dy * np.cos(t))
        field += amp * np.exp(-0.5 * (dist / width_px) ** 2)
    return _clip(img + field[..., None])


def ring(img: np.ndarray, *, centre: list[float], radii_px: list[float], amplitudes: list[float],
         width_px: float) -> np.ndarray:
    """Detector-calibration rings: concentric bright/dark circles around the rotation centre."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - centre[0] * w, yy - centre[1] * h)
    field = np.zeros((h, w), np.float32)
    for radius, amp in zip(radii_px, amplitudes):
        field += amp * np.exp(-0.5 * ((r - radius) / width_px) ** 2)
    return _clip(img + field[..., None])
