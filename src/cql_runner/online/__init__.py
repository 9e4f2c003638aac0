"""Offline-to-online fine-tuning: the online buffer, the mixed sampler and the online phase."""
