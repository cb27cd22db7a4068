"""A tracked parameter sweep: simulate each sample on queue ``sim``, aggregate on ``post``."""
