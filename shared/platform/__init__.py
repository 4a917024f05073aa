"""What runs the services: settings, logs, telemetry, PostgreSQL, Kafka, signing, topics,
leases, the embedded servers, and the start-up every service shares."""
