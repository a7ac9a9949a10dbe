"""Training and evaluation entry points built on MMEngine's Runner."""
