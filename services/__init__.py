"""The five schoolmig services; each is a FastStream Kafka app run as ``python -m services.<name>``."""
