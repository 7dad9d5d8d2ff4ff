//! Sinks: where processed results are forwarded (the durable outbox and its senders).
