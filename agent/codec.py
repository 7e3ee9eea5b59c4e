"""G.711 mu-law companding (8 bits per sample), vectorised with lookup tables, and the payload format it makes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_BIAS = 0x84
_CLIP = 32635


def _encode_table() -> np.ndarray:
    """Byte for every 16-bit linear value (index = value + 32768): the ITU-T G.711 segment rule."""
    lin = np.arange(-32768, 32768, dtype=np.int32)
    sign = (lin < 0).astype(np.int32) << 7
    mag = np.minimum(np.abs(lin), _CLIP) + _BIAS
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def _decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return (np.where(sign, -mag, mag) / 32768.0).astype(np.float64)


_ENCODE = _encode_table()
_DECODE = _decode_table()


def encode(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to mu-law bytes (values outside are saturated, as a DAC would)."""
    lin = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int32) + 32768
    return _ENCODE[lin].tobytes()


def decode(payload: bytes | bytearray | memoryview) -> np.ndarray:
    """mu-law bytes to float64 samples in [-1, 1]."""
    return _DECODE[np.frombuffer(payload, dtype=np.uint8)]


@dataclass(frozen=True)
class PayloadFormat:
    """How a source's media payloads turn into the pipeline's 16 kHz samples."""
    name: str
    bytes_per_ms: float                              # payload bytes per millisecond of audio
    decode: Callable[[bytes], np.ndarray]            # payload -> float64 samples at 16 kHz in [-1, 1]


MU_LAW_16K = PayloadFormat("PCMU/16000", 16.0, decode)  # the simulator's wire: one byte per 16 kHz sample
