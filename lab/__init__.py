"""The Shapes lab: a procedural world of captioned images, its checker, and tiny models trained on it."""
