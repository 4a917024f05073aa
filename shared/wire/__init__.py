"""What travels on the topics: message models, batch encoding, chunks, barriers, fan-out."""
