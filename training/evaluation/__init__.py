"""Offline evaluation: full ranking, the sampled protocol, head/tail groups, a run's metrics and plots."""
