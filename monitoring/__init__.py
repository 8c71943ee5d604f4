"""Model monitoring: the prediction log, realized and estimated performance, drift, alarms.

`monitoring.prediction_log` appends every prediction of the three doors (service, stream, batch)
to a partitioned Parquet log; `monitoring.monitor.run_monitor` judges it against outcomes as
they arrive, watches the inputs before the labels come, and raises alarms that the retraining
loop acts on.
"""
