"""Callbacks of mnist99's own, one module per job. Named here, where the configs' `_target_`s
(mnist99.callbacks.<Name>) and those saved with earlier runs find them."""

from __future__ import annotations

from mnist99.callbacks.ema import EMA
from mnist99.callbacks.error_analysis import ErrorAnalysis, UnevenTestSplit
from mnist99.callbacks.net_summary import NetSummary
from mnist99.callbacks.progress import ImagesPerSecondBar, LogIntervalWithinEpoch
from mnist99.callbacks.stops import GracefulStop, RngState, StopOnDivergence
from mnist99.callbacks.timing import EpochSeconds, FitStart, TimeToAccuracy

__all__ = ["EMA", "EpochSeconds", "ErrorAnalysis", "FitStart", "GracefulStop", "ImagesPerSecondBar", "LogIntervalWithinEpoch",
           "NetSummary", "RngState", "StopOnDivergence", "TimeToAccuracy", "UnevenTestSplit"]
