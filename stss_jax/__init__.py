"""stss-jax: SELFY spatio-temporal self-similarity for video action recognition in JAX."""
