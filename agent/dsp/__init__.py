"""The agent's reference DSP chain: stages built from the pipeline knobs over the ext.dsp primitives."""
from agent.dsp.chain import STAGE_TYPES, DspChain
from agent.dsp.design_cache import DesignCache

__all__ = ["DspChain", "DesignCache", "STAGE_TYPES"]
