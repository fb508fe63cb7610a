"""The core layer: what every other layer builds on (errors, capture, scores, models, inputs)."""
