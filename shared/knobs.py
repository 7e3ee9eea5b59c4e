"""The knob catalog: every audio-processing knob of the plan, declared once, and its validation.

The plan says 111 knobs, but its equalizer list (enable plus 10 bands of frequency and
gain) gives 21, so the catalog holds 112. Defaults are the plan's. `acts` says where a knob
acts: `receive` (jitter buffer and repair on the receiving side), `dsp` (the audio chain),
`send` (packetisation, FEC and pacing on the sending side) or `external` (the station's
own audio engine or transport, through the agent's applier). What-if replay can answer
`receive` and `dsp` knobs from received packets; `send` knobs need the simulator or a model.
`applied_by` is the coarser split derived from it: "external", or "pipeline" for the rest.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class KnobType(str, Enum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    ENUM = "enum"


class Acts(str, Enum):
    """Where a knob acts."""
    RECEIVE = "receive"    # jitter buffer and retransmission requests of the receiver (a replay of received
                           # packets holds only the answers to the requests that were made)
    DSP = "dsp"            # the audio chain
    SEND = "send"          # packetisation, FEC and pacing of the sender
    EXTERNAL = "external"  # handed to the station's own engine through the applier


PIPELINE = "pipeline"  # applied_by of every knob the agent's reference pipeline implements
EXTERNAL = "external"  # applied_by of the knobs handed to the station's engine

KNOB_CATEGORIES: tuple[str, ...] = (
    "agc", "aec", "noise_reduction", "equalizer", "voice_enhancement",
    "compression", "spatial", "buffer", "network",
)

# The 10 equalizer bands of the plan (60 Hz and 170 Hz given, the rest the classic
# 10-band graphic EQ centres that continue that series).
EQ_BAND_FREQS: tuple[int, ...] = (60, 170, 310, 600, 1000, 3000, 6000, 12000, 14000, 16000)


@dataclass(frozen=True)
class Knob:
    name: str
    category: str
    type: KnobType
    default: Any
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    acts: Acts = field(kw_only=True)  # every declaration says where it acts

    @property
    def applied_by(self) -> str:
        """"external" for knobs handed to the station's engine, "pipeline" for those the agent implements."""
        return EXTERNAL if self.acts is Acts.EXTERNAL else PIPELINE

    def check(self, value: Any) -> str | None:
        """The problem with `value` for this knob, or None when it is acceptable."""
        t = self.type
        if t is KnobType.BOOL:
            return None if isinstance(value, bool) else f"expected a boolean, got {_describe(value)}"
        if t is KnobType.ENUM:
            if not isinstance(value, str):
                return f"expected one of {', '.join(self.choices)}, got {_describe(value)}"
            return None if value in self.choices else f"{value!r} is not one of {', '.join(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {'an integer' if t is KnobType.INT else 'a number'}, got {_describe(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {value}"
        if t is KnobType.INT and isinstance(value, float) and not value.is_integer():
            return f"expected an integer, got {value}"
        if self.minimum is not None and value < self.minimum:
            return f"{_fmt(value)} is below the minimum {_fmt(self.minimum)}"
        if self.maximum is not None and value > self.maximum:
            return f"{_fmt(value)} is above the maximum {_fmt(self.maximum)}"
        return None

    def coerce(self, value: Any) -> Any:
        """The canonical Python value of an already-checked value (5.0 -> 5 for int knobs)."""
        if self.type is KnobType.INT:
            return int(value)
        if self.type is KnobType.FLOAT:
            return float(value)
        return value

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name, "category": self.category, "type": self.type.value,
            "unit": self.unit, "default": self.default, "description": self.description,
            "appliedBy": self.applied_by, "acts": self.acts.value,
        }
        if self.type is KnobType.ENUM:
            doc["choices"] = list(self.choices)
        else:
            doc["minimum"], doc["maximum"] = self.minimum, self.maximum
        return doc


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Each declaration names where the knob acts as its last argument: nothing is left to a default.
def _b(name: str, cat: str, default: bool, desc: str, acts: Acts) -> Knob:
    return Knob(name, cat, KnobType.BOOL, default, description=desc, acts=acts)


def _i(name: str, cat: str, default: int, lo: float, hi: float, unit: str, desc: str, acts: Acts) -> Knob:
    return Knob(name, cat, KnobType.INT, default, unit, lo, hi, description=desc, acts=acts)


def _f(name: str, cat: str, default: float, lo: float, hi: float, unit: str, desc: str, acts: Acts) -> Knob:
    return Knob(name, cat, KnobType.FLOAT, default, unit, lo, hi, description=desc, acts=acts)


def _e(name: str, cat: str, default: str, choices: tuple[str, ...], desc: str, acts: Acts) -> Knob:
    return Knob(name, cat, KnobType.ENUM, default, choices=choices, description=desc, acts=acts)


_DSP, _RECEIVE, _SEND, _EXTERNAL = Acts.DSP, Acts.RECEIVE, Acts.SEND, Acts.EXTERNAL


def _agc() -> list[Knob]:
    c = "agc"
    return [
        _b("agc_enabled", c, True, "Automatic gain control on/off.", _DSP),
        _f("agc_target_level", c, -18, -31, 0, "dBFS", "Active-speech RMS level the adaptive AGC steers the output towards (mode adaptive; pauses and noise do not count).", _DSP),
        _f("agc_max_gain", c, 30, 0, 60, "dB", "Largest gain (boost or cut) the adaptive AGC may apply (mode adaptive).", _DSP),
        _f("agc_compression_gain", c, 9, 0, 90, "dB", "Largest digital gain of the adaptive-digital AGC (mode adaptive_digital, WebRTC compressionGaindB).", _DSP),
        _b("agc_limiter_enabled", c, True, "Hard ceiling after the AGC gain so boosted peaks stay below full scale minus the saturation margin.", _DSP),
        _i("agc_target_level_dbfs", c, 3, 0, 31, "dB below FS", "Target level as dB below full scale for modes adaptive_digital and fixed_digital (WebRTC targetLevelDbfs: 3 means -3 dBFS peak ceiling).", _DSP),
        _f("agc_compression_gain_db", c, 15, 0, 90, "dB", "Fixed digital gain applied in mode fixed_digital.", _DSP),
        _e("agc_mode", c, "adaptive", ("adaptive", "adaptive_digital", "fixed_digital"),
           "adaptive: track agc_target_level within agc_max_gain; adaptive_digital: track -agc_target_level_dbfs within agc_compression_gain; fixed_digital: constant agc_compression_gain_db.", _DSP),
        _i("agc_window", c, 10, 10, 1000, "ms", "Length of the level-measurement window (in 5 ms steps); windows judged speech (above the noise floor) update the talker's speech level, a ~1 s average the gain follows.", _DSP),
        _f("agc_release_time", c, 60, 1, 5000, "ms", "Time constant for the gain to rise when the speech level falls.", _DSP),
        _f("agc_attack_time", c, 5, 0.1, 1000, "ms", "Time constant for the gain to fall when the speech level rises.", _DSP),
        _f("agc_hold_time", c, 0, 0, 5000, "ms", "Time the gain is held after a speech-level drop before release starts.", _DSP),
        _b("agc_noise_gate_enabled", c, False, "Mute (gate) the signal while its level stays below agc_noise_gate_threshold; the AGC does not boost gated noise.", _DSP),
        _f("agc_noise_gate_threshold", c, -50, -90, 0, "dBFS", "Level under which the noise gate closes.", _DSP),
        _f("agc_saturation_margin", c, 2, 0, 20, "dB", "Headroom kept below full scale by the AGC limiter.", _DSP),
    ]


def _aec() -> list[Knob]:
    c = "aec"
    return [
        _b("aec_enabled", c, True, "Acoustic echo cancellation of the far-end reference (NLMS adaptive filter).", _DSP),
        _i("aec_filter_length", c, 200, 10, 500, "ms", "Echo tail the adaptive filter models.", _DSP),
        _e("aec_nlp_mode", c, "moderate", ("conservative", "moderate", "aggressive"), "Non-linear processing: how hard residual echo is suppressed after the linear filter.", _DSP),
        _e("aec_suppression_level", c, "high", ("low", "moderate", "high"), "Attenuation applied to frames dominated by residual echo.", _DSP),
        _b("aec_comfort_noise", c, True, "Fill suppressed frames with noise at the measured background level instead of silence.", _DSP),
        _b("aec_drift_compensation", c, True, "Clock drift compensation between capture and render devices (audio engine).", _EXTERNAL),
        _b("aec_mobile_mode", c, False, "Use the low-complexity mobile echo controller (audio engine).", _EXTERNAL),
        _e("aec_routing_mode", c, "loudSpeakerphone", ("quietEarpieceOrHeadset", "earpiece", "loudEarpiece", "speakerphone", "loudSpeakerphone"), "Acoustic routing assumed by the mobile echo controller (audio engine).", _EXTERNAL),
        _e("aec_skew_mode", c, "default", ("default", "enabled", "disabled"), "Device clock skew estimation (audio engine).", _EXTERNAL),
        _b("aec_delay_logging", c, False, "Log the echo path delay estimates (audio engine).", _EXTERNAL),
        _b("aec_extended_filter", c, False, "Extended filter mode for long echo paths (audio engine).", _EXTERNAL),
        _b("aec_refined_adaptive_filter", c, False, "Refined adaptive filter update (audio engine).", _EXTERNAL),
    ]


def _nr() -> list[Knob]:
    c = "noise_reduction"
    return [
        _b("nr_enabled", c, True, "Spectral noise reduction on/off.", _DSP),
        _e("nr_level", c, "high", ("low", "moderate", "high", "very_high"), "Gain floor of the spectral gain on noise-dominated bands (6/12/18/24 dB of attenuation at most; nr_stationary_level adds to it on bands at the noise floor).", _DSP),
        _e("nr_type", c, "stationary", ("stationary", "non_stationary"), "stationary: slow noise-floor tracking; non_stationary: fast minimum tracking that follows changing noise.", _DSP),
        _f("nr_stationary_level", c, 12, 0, 40, "dB", "Extra attenuation, on top of nr_level, of bands that sit on the tracked noise floor (no speech in them).", _DSP),
        _b("nr_transient_suppression", c, True, "Attenuate short broadband clicks that exceed the frame's spectral envelope.", _DSP),
        _b("nr_voice_activity_detection", c, True, "Update the noise estimate only in frames without speech.", _DSP),
        _i("nr_frequency_bands", c, 32, 4, 256, "bands", "Number of frequency bands the gain is computed on (coarser is smoother).", _DSP),
        _f("nr_spectral_subtraction", c, 0.8, 0, 3, "factor", "Over-subtraction factor of spectral subtraction (used when the Wiener filter is off).", _DSP),
        _b("nr_wiener_filter", c, True, "Use a Wiener gain (SNR / (1 + SNR)) instead of plain spectral subtraction.", _DSP),
        _f("nr_comfort_noise_level", c, -70, -120, -20, "dBFS", "Largest level of the comfort noise added back so denoised pauses do not sound dead; shaped like the tracked background noise and never louder than it.", _DSP),
    ]


def _eq() -> list[Knob]:
    c = "equalizer"
    knobs = [_b("eq_enabled", c, False, "10-band parametric equalizer on/off.", _DSP)]
    for n, freq in enumerate(EQ_BAND_FREQS, start=1):
        knobs.append(_f(f"eq_band_{n}_freq", c, freq, 20, 20000, "Hz",
                        f"Centre frequency of band {n} (peaking biquad, Q 1.41). Above 0.45 x sample rate the band acts at that limit.", _DSP))
        knobs.append(_f(f"eq_band_{n}_gain", c, 0, -24, 24, "dB", f"Gain of band {n}.", _DSP))
    return knobs


def _voice() -> list[Knob]:
    c = "voice_enhancement"
    return [
        _f("voice_boost", c, 0, 0, 12, "dB", "Peaking boost of the speech fundamental/formant region (1 kHz, wide).", _DSP),
        _f("clarity_enhancement", c, 0, 0, 100, "%", "Peaking boost at 2.5 kHz, up to +9 dB, for intelligibility.", _DSP),
        _f("de_esser_strength", c, 0, 0, 100, "%", "Dynamic cut of 5-8 kHz sibilance when it exceeds the broadband level, up to 12 dB.", _DSP),
        _f("brilliance", c, 0, -12, 12, "dB", "High shelf at 6 kHz.", _DSP),
        _f("warmth", c, 0, -12, 12, "dB", "Low shelf at 250 Hz.", _DSP),
        _f("presence", c, 0, -12, 12, "dB", "Peaking filter at 4 kHz.", _DSP),
        _f("bass_boost", c, 0, -12, 12, "dB", "Low shelf at 100 Hz.", _DSP),
        _f("treble_boost", c, 0, -12, 12, "dB", "High shelf at 4 kHz.", _DSP),
        _f("mid_scoop", c, 0, 0, 12, "dB", "Peaking cut at 700 Hz.", _DSP),
        _f("formant_shift", c, 0, -12, 12, "semitones", "Formant shift (audio engine: needs a pitch-synchronous resynthesis the reference chain does not have).", _EXTERNAL),
        _b("pitch_correction", c, False, "Pitch correction (audio engine).", _EXTERNAL),
        _b("vibrato_suppression", c, False, "Vibrato suppression (audio engine).", _EXTERNAL),
        _f("breathiness_reduction", c, 0, 0, 100, "%", "Downward expander on the 4-8 kHz band during unvoiced low-level frames, up to 12 dB.", _DSP),
        _f("harshness_reduction", c, 0, 0, 100, "%", "Dynamic cut at 3.5 kHz when that band dominates, up to 9 dB.", _DSP),
        _f("sibilance_control", c, 0, 0, 100, "%", "Static high-shelf cut at 7 kHz, up to 9 dB.", _DSP),
    ]


def _compression() -> list[Knob]:
    c = "compression"
    return [
        _b("compressor_enabled", c, False, "Dynamic range compressor on/off.", _DSP),
        _f("compressor_threshold", c, -20, -60, 0, "dBFS", "Level above which gain is reduced.", _DSP),
        _f("compressor_ratio", c, 4, 1, 20, ":1", "Input dB over threshold per output dB.", _DSP),
        _f("compressor_attack", c, 10, 0.1, 500, "ms", "Attack time constant.", _DSP),
        _f("compressor_release", c, 100, 1, 5000, "ms", "Release time constant.", _DSP),
        _f("compressor_knee", c, 2.5, 0, 24, "dB", "Width of the soft knee around the threshold.", _DSP),
        _f("compressor_makeup_gain", c, 0, 0, 40, "dB", "Gain added after compression.", _DSP),
        _f("compressor_lookahead", c, 5, 0, 20, "ms", "Delay of the audio path so gain reduction starts before a transient (adds latency).", _DSP),
        _b("limiter_enabled", c, True, "Brick-wall peak limiter on/off (last stage of the chain).", _DSP),
        _f("limiter_threshold", c, -1, -30, 0, "dBFS", "Ceiling no output sample exceeds.", _DSP),
        _f("limiter_release", c, 50, 1, 2000, "ms", "Release time constant of the limiter's gain.", _DSP),
        _f("limiter_lookahead", c, 5, 0, 20, "ms", "Lookahead so the limiter reaches full reduction before the peak (adds latency).", _DSP),
    ]


def _spatial() -> list[Knob]:
    c = "spatial"
    return [
        _f("stereo_width", c, 100, 0, 200, "%", "Stereo width of the station's rendered output (audio engine: the monitored path is mono).", _EXTERNAL),
        _f("reverb_amount", c, 0, 0, 100, "%", "Wet level of the room reverb (0 = bypass).", _DSP),
        _e("room_size", c, "medium", ("small", "medium", "large", "hall"), "Comb-filter delay scale of the reverb.", _DSP),
        _f("pre_delay", c, 20, 0, 200, "ms", "Delay before the reverb's first reflection.", _DSP),
        _f("damping", c, 50, 0, 100, "%", "High-frequency absorption inside the reverb's feedback loops.", _DSP),
        _f("early_reflections", c, 30, 0, 100, "%", "Level of the early-reflection taps.", _DSP),
        _f("late_reflections", c, 40, 0, 100, "%", "Level (feedback) of the late reverb tail.", _DSP),
        _f("diffusion", c, 85, 0, 100, "%", "All-pass diffusion coefficient of the reverb.", _DSP),
        _f("high_frequency_damping", c, 6000, 1000, 20000, "Hz", "Low-pass cutoff applied to the reverb tail.", _DSP),
        _f("low_frequency_damping", c, 250, 20, 1000, "Hz", "High-pass cutoff applied to the reverb tail.", _DSP),
    ]


def _buffer() -> list[Knob]:
    c = "buffer"
    return [
        _i("buffer_size", c, 512, 16, 8192, "ms", "Initial capacity of the jitter buffer in milliseconds of audio.", _RECEIVE),
        _i("prefetch_ms", c, 100, 0, 2000, "ms", "Audio the jitter buffer accumulates before playout starts (at start and after it ran dry).", _RECEIVE),
        _i("jitter_buffer_depth", c, 200, 0, 2000, "ms", "Playout delay of the jitter buffer with adaptive buffering off; the most the adaptive delay may grow to with it on.", _RECEIVE),
        _i("playout_delay", c, 50, 0, 1000, "ms", "Smallest playout delay the adaptive jitter buffer uses (its floor and starting point).", _RECEIVE),
        _b("adaptive_buffering", c, True, "Adapt the playout delay to the measured jitter between playout_delay and jitter_buffer_depth.", _RECEIVE),
        _e("buffer_overflow_policy", c, "drop_oldest", ("drop_oldest", "drop_newest", "grow"), "What an insert into a full buffer does: evict the oldest packet, refuse the new one, or grow capacity up to max_buffer_size.", _RECEIVE),
        _i("max_buffer_size", c, 2048, 16, 8192, "ms", "Largest capacity the buffer may grow to.", _RECEIVE),
        _i("min_buffer_size", c, 128, 16, 8192, "ms", "Smallest capacity the buffer may shrink to.", _RECEIVE),
    ]


def _network() -> list[Knob]:
    c = "network"
    return [
        _i("packet_size", c, 320, 80, 1280, "bytes", "Audio payload per packet (G.711 mu-law at 16 kHz: 16 bytes per ms, so 320 bytes = 20 ms); sets packet rate and header overhead.", _SEND),
        _b("fec_enabled", c, True, "Forward error correction: XOR parity packets over groups of media packets.", _SEND),
        _i("fec_percentage", c, 20, 0, 100, "%", "Parity packets per media packet (20% = one parity per 5 media packets); recovers single losses per group at that bandwidth cost.", _SEND),
        _i("retransmit_timeout", c, 200, 10, 2000, "ms", "How long after a gap is detected a retransmission may be requested; a retransmission arriving after its playout time is too late.", _RECEIVE),
        _i("max_retransmits", c, 3, 0, 10, "requests", "Retransmission requests per lost packet (0 disables retransmission); the simulated sender answers as many per packet at most.", _RECEIVE),
        _e("congestion_control", c, "bbr", ("none", "reno", "cubic", "bbr"), "Congestion controller of the station's transport (transport stack).", _EXTERNAL),
        _f("pacing_rate", c, 1.25, 0.5, 4, "x send rate", "Sender pacing: packets queued behind a burst leave at this multiple of the sender's outgoing packet rate (media, FEC parity and retransmissions); below 1 the pacer's bounded queue (200 ms) fills and drops packets.", _SEND),
        _i("burst_size", c, 10, 1, 100, "packets", "Most packets the sender emits back to back before pacing applies.", _SEND),
        _e("network_priority", c, "high", ("low", "normal", "high", "critical"), "DSCP class the station's transport marks packets with (transport stack).", _EXTERNAL),
    ]


KNOBS: tuple[Knob, ...] = tuple(
    _agc() + _aec() + _nr() + _eq() + _voice() + _compression() + _spatial() + _buffer() + _network()
)
KNOBS_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
KNOB_COUNT = len(KNOBS)


def defaults() -> dict[str, Any]:
    """A full knob set at the plan's defaults (a fresh dict each call)."""
    return {k.name: k.default for k in KNOBS}


@dataclass(frozen=True)
class KnobProblem:
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


def validate(partial: Any, base: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[KnobProblem]]:
    """Check a partial knob set; return its canonical values and every problem found.

    With `base` (the full set it will be merged into), cross-knob rules are checked on the
    merged result too. Callers apply nothing unless the problem list is empty.
    """
    if not isinstance(partial, Mapping):
        return {}, [KnobProblem("body", f"expected an object of knob names to values, got {_describe(partial)}")]
    clean: dict[str, Any] = {}
    problems: list[KnobProblem] = []
    for name, value in partial.items():
        knob = KNOBS_BY_NAME.get(name) if isinstance(name, str) else None
        if knob is None:
            problems.append(KnobProblem(str(name), "unknown knob"))
            continue
        problem = knob.check(value)
        if problem:
            problems.append(KnobProblem(name, problem))
        else:
            clean[name] = knob.coerce(value)
    if not problems and base is not None:
        problems.extend(consistency_problems({**base, **clean}))
    return clean, problems


def consistency_problems(full: Mapping[str, Any]) -> list[KnobProblem]:
    """Rules that involve more than one knob, checked on a merged full set."""
    problems = []
    lo, size, hi = full["min_buffer_size"], full["buffer_size"], full["max_buffer_size"]
    if lo > hi:
        problems.append(KnobProblem("min_buffer_size", f"{lo} is above max_buffer_size {hi}"))
    elif not lo <= size <= hi:
        problems.append(KnobProblem("buffer_size", f"{size} is outside min_buffer_size..max_buffer_size ({lo}..{hi})"))
    if full["playout_delay"] > full["jitter_buffer_depth"]:
        problems.append(KnobProblem("playout_delay", f"{full['playout_delay']} is above jitter_buffer_depth {full['jitter_buffer_depth']}"))
    return problems


def catalog_json() -> list[dict[str, Any]]:
    return [k.to_json() for k in KNOBS]
