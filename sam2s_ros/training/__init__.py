"""``sam2s train``: turn a checkpoint into SAM2S on recorded masklets (see trainer.py)."""
