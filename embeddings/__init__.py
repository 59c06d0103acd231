"""lmpipe: embeddings."""
