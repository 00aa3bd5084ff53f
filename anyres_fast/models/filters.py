"""Low-pass FIR filter design for the StyleGAN3 synthesis layers (own numpy/torch implementation).

Two designs, both with unit DC gain:
- `kaiser_lowpass(numtaps, cutoff, width, fs)`: the windowed-sinc design with a Kaiser window whose beta
  follows Kaiser's attenuation formulas. Same result as `scipy.signal.firwin(numtaps, cutoff,
  width=width, fs=fs)` (checked in the tests), so filters match published StyleGAN3 checkpoints.
- `jinc_lowpass(numtaps, cutoff, width, fs)`: the radially symmetric 2-D filter of config R: a jinc
  (the 2-D ideal low-pass) times the outer product of the same 1-D Kaiser window.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def kaiser_attenuation(numtaps: int, width_rel: float) -> float:
    """Stop-band attenuation (dB) a Kaiser FIR of `numtaps` reaches for a transition width given as a
    fraction of the Nyquist frequency (Kaiser's empirical formula)."""
    return 2.285 * (numtaps - 1) * math.pi * width_rel + 7.95


def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser window shape parameter for a desired attenuation (Kaiser's empirical formula)."""
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_window(numtaps: int, beta: float) -> np.ndarray:
    """Symmetric Kaiser window: I0(beta*sqrt(1 - t^2)) / I0(beta), t running from -1 to 1."""
    if numtaps == 1:
        return np.ones(1)
    t = np.linspace(-1.0, 1.0, numtaps)
    return np.i0(beta * np.sqrt(np.clip(1.0 - t * t, 0.0, None))) / np.i0(beta)


def _check_design(name: str, numtaps: int, cutoff: float, width: float, fs: float) -> None:
    if not isinstance(numtaps, int) or numtaps < 1:
        raise ValueError(f"{name}: numtaps must be a positive int, got {numtaps!r}")
    if not (0 < cutoff < fs / 2):
        raise ValueError(f"{name}: cutoff must lie in (0, fs/2) = (0, {fs / 2}), got {cutoff}")
    if not width > 0:
        raise ValueError(f"{name}: transition width must be > 0, got {width}")


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """1-D Kaiser-windowed sinc low-pass (float64 numpy array summing to 1)."""
    _check_design("kaiser_lowpass", numtaps, cutoff, width, fs)
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / nyquist))
    m = np.arange(numtaps) - (numtaps - 1) / 2
    c = cutoff / nyquist
    h = c * np.sinc(c * m) * kaiser_window(numtaps, beta)
    return h / h.sum()


def jinc_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """2-D radially symmetric jinc low-pass, Kaiser-windowed (numtaps x numtaps, summing to 1)."""
    _check_design("jinc_lowpass", numtaps, cutoff, width, fs)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(x[None, :], x[:, None])
    # jinc: J1(2*pi*fc*r) / (pi*r); its limit at r = 0 is fc (only reached for odd numtaps).
    arg = 2 * math.pi * cutoff * r
    j1 = torch.special.bessel_j1(torch.from_numpy(arg)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(r > 0, j1 / (math.pi * np.where(r > 0, r, 1.0)), cutoff)
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2)))
    w = kaiser_window(numtaps, beta)
    f = f * np.outer(w, w)
    return f / f.sum()


def design_lowpass(numtaps: int, cutoff: float, width: float, fs: float,
                   radial: bool = False) -> Optional[torch.Tensor]:
    """The filter a StyleGAN3 layer registers: None for one tap (identity), else float32 1-D Kaiser
    (separable) or 2-D radial jinc."""
    if numtaps == 1:
        return None
    f = jinc_lowpass(numtaps, cutoff, width, fs) if radial else kaiser_lowpass(numtaps, cutoff, width, fs)
    return torch.as_tensor(f, dtype=torch.float32)
