"""LLM-ESR: the dual-view model (``model``) and its wiring into a run (``setup``)."""
