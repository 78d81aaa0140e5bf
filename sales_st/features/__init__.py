"""The feature stage: day arrays, calendar, spatial context and windows into example tables,
with the typed feature spec."""
