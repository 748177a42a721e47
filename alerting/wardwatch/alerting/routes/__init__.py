"""The alerting API's routes by area, each module exporting ``*_PATHS`` and ``*_SCHEMAS``.

:mod:`wardwatch.alerting.api` merges them (with the registry's and the observations') into one
OpenAPI document and registers every operation's handler from it.
"""
