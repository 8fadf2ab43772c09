"""Decoding: batched greedy and beam search over any step function."""
