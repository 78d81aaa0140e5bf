"""The training stage: the driver (Horovod on Spark), the rank worker, its callbacks, and the
model store."""
