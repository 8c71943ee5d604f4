"""The file MLflow logs as the registered model's code ("models from code": no pickle).

MLflow copies this file next to the model and runs it when the model is loaded; it is never
imported by the package. The model itself is `registry.pyfunc_model.ShipDelayModel`.
"""

import mlflow

from registry.pyfunc_model import ShipDelayModel

mlflow.models.set_model(ShipDelayModel())
