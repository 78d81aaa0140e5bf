"""The fused spatio-temporal Keras model and the tensors it reads."""
