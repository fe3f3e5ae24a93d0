"""The deployment: the process that composes the web app, the CoAP gateway, the scheduler and the
simulator (`service.runner`, the `parking-run` console script).

It sits outside both `parking` (the core) and `gateway` (the CoAP side) because it depends on
both; neither depends on it.
"""
