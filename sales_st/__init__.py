"""sales_st: spatio-temporal sales forecasting on Spark + Horovod."""
