#!/usr/bin/python3
"""Parses Prometheus text exposition from stdin with the reference parser
(python3-prometheus-client) and prints its samples as JSON lines:
{"name": ..., "labels": {...}, "value": ..., "type": ...}. Any syntax error
makes it exit 1, so a spec fails on output Prometheus would reject."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value,
                          "type": family.type}))
