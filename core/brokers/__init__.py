"""How a submit's message reaches its broker: the producer, chosen once per backend
(producer.py: inside the record's create script, a native publish to RabbitMQ, or the
library's own client), and the RabbitMQ publisher (amqp.py). Adapters only build the
message."""
