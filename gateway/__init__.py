"""MQTT meter gateway (signed readings → durable queue → MeasurementLedger) and meter simulator."""
