"""Discrete-action CQL: the exact-logsumexp conservative term on Double DQN or QR-DQN."""
