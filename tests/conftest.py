"""Shared fixtures: `impl`/`cy` give the DSP tests both builds of ext.dsp (tests/dsp_twins.py).

A test module that defines its own `impl` (tests/test_agent_vad.py, for ext.vad) overrides it.
"""
pytest_plugins = ["tests.dsp_twins"]
