"""The world simulator: a seeded, vectorized multimodal shipping world with hidden causes of delay."""
