"""tracejudge stream processor: Kafka OTLP spans -> assembled traces -> ClickHouse."""
