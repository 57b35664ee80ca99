"""Base models: resolving a model reference, the model store, the starter, a model's shape, trust."""
