"""Consistency checks for deploy/otel-collector.yaml against docker-compose.yml and Settings.

The collector's kafka exporter must write what the worker reads (topic, encoding, key) to an
address the broker advertises, and its traces pipeline must run from the published OTLP ports to
that exporter.
"""

from __future__ import annotations

from tests.deploy.stack import (
    check_bootstrap,
    env_name,
    exporter_traces_setting,
    find_service_by_image,
    kafka_exporter,
    settings_default,
)

# --------------------------------------------------------------------------------------------
# kafka exporter vs the worker
# --------------------------------------------------------------------------------------------


def test_collector_kafka_exporter_topic_encoding_and_key(collector, worker_env):
    _, exp = kafka_exporter(collector)
    topic = exporter_traces_setting(exp, "topic")
    assert topic == settings_default("input_topic")
    assert topic == worker_env.get(env_name("input_topic"), settings_default("input_topic"))
    assert exporter_traces_setting(exp, "encoding") == "otlp_proto"
    encoding = worker_env.get(env_name("input_encoding"), settings_default("input_encoding"))
    assert encoding in ("auto", "otlp_proto"), f"worker expects {encoding}, collector writes otlp_proto"
    assert exp.get("partition_traces_by_id") is True, "spans of one trace must share a partition"


def test_collector_brokers_match_kafka_listener(services, collector):
    _, exp = kafka_exporter(collector)
    brokers = exp.get("brokers")
    assert brokers, "kafka exporter has no brokers (its default localhost:9092 is wrong in a container)"
    check_bootstrap(services, ",".join(brokers), "otel-collector")


# --------------------------------------------------------------------------------------------
# collector pipeline
# --------------------------------------------------------------------------------------------


def test_collector_pipeline_wires_otlp_to_kafka(collector):
    kafka_key, _ = kafka_exporter(collector)
    pipelines = (collector.get("service") or {}).get("pipelines") or {}
    traces = {k: v for k, v in pipelines.items() if k == "traces" or k.startswith("traces/")}
    assert traces, "no traces pipeline"
    wired = [
        k
        for k, p in traces.items()
        if any(r == "otlp" or r.startswith("otlp/") for r in p.get("receivers", []))
        and kafka_key in p.get("exporters", [])
    ]
    assert wired, f"no traces pipeline from an otlp receiver to {kafka_key}"
    for name in wired:
        p = traces[name]
        for section, key in (("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")):
            defined = collector.get(section) or {}
            for component in p.get(key, []):
                assert component in defined, f"pipeline {name} uses undefined {section[:-1]} {component}"
        assert any(pr == "batch" or pr.startswith("batch/") for pr in p.get("processors", []))


def test_collector_receives_on_published_ports(collector, services):
    otlp = (collector.get("receivers") or {}).get("otlp") or {}
    protocols = otlp.get("protocols") or {}
    assert protocols.get("grpc", {}).get("endpoint") == "0.0.0.0:4317"
    assert protocols.get("http", {}).get("endpoint") == "0.0.0.0:4318"
    name, svc = find_service_by_image(services, "otel/opentelemetry-collector-contrib")
    published = {str(p).split("/")[0].rsplit(":", 1)[-1] for p in svc.get("ports", [])}
    assert {"4317", "4318"} <= published, f"{name} must publish 4317 and 4318"
    mounts = [str(v) for v in svc.get("volumes", [])]
    assert any(m.startswith("./deploy/otel-collector.yaml:") for m in mounts), "collector config not mounted"
