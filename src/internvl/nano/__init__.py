"""The nano InternVL: a small model trained from scratch on the procedural world, shipped as the default."""
