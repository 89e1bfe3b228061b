"""Per-rater beauty predictors and the pseudo-labels they give (Beholder-GAN)."""
