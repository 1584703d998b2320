"""The city edge's broker as the api sees it: login and topic checks it asks for (RabbitMQ's
HTTP auth backend), and its management API (queue depth, dropping a device's connections)."""
