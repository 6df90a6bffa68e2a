"""Experiments shipped with the library: ablations, compute profile, preference sweep, mechanistic analysis.

Each experiment is a library function with a thin CLI wrapper (`negotiax ablate|profile|sweep|interpret`).
"""
