"""Callbacks of mnist99's own, one module per job, named here for the configs (mnist99.callbacks.<Name>).
A new one needs no entry here: its config names it by its module (mnist99.callbacks.<module>.<Name>)."""

from __future__ import annotations

from mnist99.callbacks.ema import EMA
from mnist99.callbacks.error_analysis import ErrorAnalysis, UnevenTestSplit
from mnist99.callbacks.net_summary import NetSummary
from mnist99.callbacks.progress import ImagesPerSecondBar, LogIntervalWithinEpoch
from mnist99.callbacks.stops import GracefulStop, RngState, StopOnDivergence
from mnist99.callbacks.timing import EpochSeconds, TimeToAccuracy

__all__ = ["EMA", "EpochSeconds", "ErrorAnalysis", "GracefulStop", "ImagesPerSecondBar", "LogIntervalWithinEpoch",
           "NetSummary", "RngState", "StopOnDivergence", "TimeToAccuracy", "UnevenTestSplit"]
