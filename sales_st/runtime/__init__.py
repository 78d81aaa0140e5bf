"""Spark runtime: the session factory, the job runner and its exit codes, the main pipeline,
spark-submit arguments and the metastore lock."""
