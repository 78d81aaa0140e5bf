"""From forecasts to decisions: replenishment orders from lead-time demand quantiles."""
