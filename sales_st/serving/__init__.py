"""The forecast stage: scoring windows with a stored model into the forecasts table, and the
conformal calibration of its intervals."""
