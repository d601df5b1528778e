"""The MQTT meter gateway: signed readings are checked, committed to a durable queue and
recorded in ``MeasurementLedger`` in batches, each exactly once (a service over
``contracts``)."""
