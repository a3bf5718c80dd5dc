"""Scores and decisions: the memory bank and its metadata, the score heads, band profiles, the detector."""
