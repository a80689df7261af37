"""Offline trainer.

The product path, each package importing only those after it: ``run`` (model builder, run directory, training
loop, checkpoints), ``evaluation`` (full ranking, sampled protocol, groups, a run's metrics, plots), ``models``
(SASRec, DreamRec and its diffusion process, LLM-ESR, the recommender and its losses, the semantic query),
``config``, ``items`` (item tables, language embeddings), ``data`` (readers, dataset, splits). The study protocols
(``protocols``: cold items, long tail) sit above them and reach training only through a split's rules;
``experiment`` wires a run end to end and ``cli`` exposes it.
"""
