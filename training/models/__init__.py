"""Sequence encoders and the recommenders built on them: SASRec, DreamRec (+ its diffusion process), LLM-ESR."""
