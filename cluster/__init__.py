"""lmpipe: cluster."""
