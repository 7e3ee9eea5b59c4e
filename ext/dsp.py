"""Selects the DSP primitives: the Cython module ext._dsp unless TPMON_NO_EXTENSIONS=1 or it is not built."""
from __future__ import annotations

from ext.dsp_py import FILTER_KINDS, MAX_DESIGN_FRACTION, Coeffs, db_to_lin, design_biquad
from ext.twins import choose

_impl, IMPLEMENTATION = choose("_dsp", "dsp_py")
MODULE = _impl

Biquad = _impl.Biquad
BiquadChain = _impl.BiquadChain
EnvelopeFollower = _impl.EnvelopeFollower
Compressor = _impl.Compressor
Limiter = _impl.Limiter
AgcGain = _impl.AgcGain
NoiseGate = _impl.NoiseGate
SpectralGain = _impl.SpectralGain
FeedbackComb = _impl.FeedbackComb
Allpass = _impl.Allpass
# Frame kernels of the echo canceller and the noise reducer.
energy_peak = _impl.energy_peak
pbfdaf_push = _impl.pbfdaf_push
pbfdaf_echoes = _impl.pbfdaf_echoes
pbfdaf_adapt = _impl.pbfdaf_adapt
nlp_ramp = _impl.nlp_ramp
stft_frames = _impl.stft_frames
band_powers = _impl.band_powers
band_gains_apply = _impl.band_gains_apply
overlap_add = _impl.overlap_add

__all__ = ["IMPLEMENTATION", "MODULE", "FILTER_KINDS", "MAX_DESIGN_FRACTION", "Coeffs", "db_to_lin", "design_biquad",
           "Biquad", "BiquadChain", "EnvelopeFollower", "Compressor", "Limiter", "AgcGain", "NoiseGate", "SpectralGain",
           "FeedbackComb", "Allpass", "energy_peak", "pbfdaf_push", "pbfdaf_echoes", "pbfdaf_adapt",
           "nlp_ramp", "stft_frames", "band_powers", "band_gains_apply", "overlap_add"]
