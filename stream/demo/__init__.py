"""Demo pieces: a local Kafka-protocol broker, an OTLP-to-Kafka span exporter and a simulated agent fleet."""
