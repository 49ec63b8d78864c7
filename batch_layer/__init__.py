"""The batch layer: owns the master dataset (the lake) and recomputes batch views from it.

It meets the other layers only through Kafka (it consumes the events topic) and through what
it publishes (the lake, and batch view versions with their offset cutoffs).
"""
