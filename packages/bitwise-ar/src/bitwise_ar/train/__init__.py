"""Training of the bitwise autoregressive transformer (single process, Ray Train, MLflow tracking)."""
