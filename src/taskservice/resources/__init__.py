"""HTTP resources, one module per group. They never import pika or docker."""
