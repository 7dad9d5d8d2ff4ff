//! Orders: the user-owned YAML files in `orders/` and the order book that tracks them.

pub mod book;
pub mod order;
