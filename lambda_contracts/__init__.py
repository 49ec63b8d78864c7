"""Contracts every layer shares: settings, the event envelope and its serde, topic names.

Layers import this package and never each other; they meet only through Kafka topics and
the files and manifests they publish, whose shapes are defined here.
"""
