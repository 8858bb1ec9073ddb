"""Wire formats (OTLP protobuf / JSON), canonical span and trace models, and the ClickHouse DDL."""
