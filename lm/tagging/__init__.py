"""Sequence taggers (window, deep bidirectional RNN, CRF output, multitask) for the tagger stage."""
