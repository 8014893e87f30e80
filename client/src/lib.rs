//! Rust client for Railyard. For now a skeleton: the async Kafka-protocol producer, consumer and
//! admin client arrive together with the real node (issue 3).
