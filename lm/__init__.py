"""lmpipe: lm."""
