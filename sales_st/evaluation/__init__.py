"""The evaluation stage: baselines, metrics, the backtest and its report."""
