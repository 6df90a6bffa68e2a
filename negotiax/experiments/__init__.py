"""Experiments shipped with the library: ablations, compute profile, preference sweep, mechanistic analysis.

Library functions only (their verbs are in negotiax/cli/: `negotiax ablate|profile|sweep|interpret`). They
run whole jobs on top of negotiax.pipeline (ablate trains and scores each grid entry with it), so they may
import the recipe and the pipeline; nothing below them imports an experiment.
"""
