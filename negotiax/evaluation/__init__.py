"""Evaluation stage: scores for generations, with intervals, and the reports built from them.

`config` holds EvalConfig, `evaluate` scores a generations file (judges, offline metrics, bootstrap
intervals; resumable by fingerprint), `metrics` the offline metrics, `negotiation` the circuit's α readings
per group of prompts, `report` the Markdown/HTML run report. The judges themselves live in negotiax.judges.
"""
from .config import EvalConfig

__all__ = ["EvalConfig"]
