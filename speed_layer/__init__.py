"""The speed layer: keeps the views fresh within a second from the events topic.

It meets the other layers only through Kafka and through what it publishes (per-partition
snapshots of partial view rows, see ``lambda_contracts.speed_snapshot``); it reads the batch
layer's published cutoff to know what it may prune.
"""
