"""The simulated city: street sensors of every kind publishing over MQTT as real firmware does."""
