//! Prometheus metrics, kept per service instance (no process-wide registry), so that tests and
//! several routers in one process never mix their numbers.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s: from a cached read to a queued password hash.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub logins: Family<OutcomeLabels, Counter>,
    hash_queue: Gauge<i64, AtomicI64>,
    pool: Family<PoolLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        let hash_queue = Gauge::<i64, AtomicI64>::default();
        let pool = Family::<PoolLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "password_hash_queue_depth",
            "Requests waiting for a password hashing slot",
            hash_queue.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            logins,
            hash_queue,
            pool,
        }
    }
}

/// Point-in-time values read when the metrics are scraped.
pub struct Snapshot {
    pub hash_queue_depth: usize,
    pub pool_size: usize,
    pub pool_available: usize,
    pub pool_waiting: usize,
    pub pool_max: usize,
}

impl Metrics {
    /// Publishes the hashing pool's count of PBKDF2 derivations (`latchkey_password_derivations_total`).
    pub fn register_derivations(&mut self, derivations: Counter) {
        self.registry.register(
            "password_derivations",
            "PBKDF2 derivations run by the hashing pool (password hashes and checks, the dummy ones included)",
            derivations,
        );
    }

    pub fn render(&self, snapshot: &Snapshot) -> String {
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.hash_queue.set(as_i64(snapshot.hash_queue_depth));
        self.pool
            .get_or_create(&PoolLabels { state: "open" })
            .set(as_i64(snapshot.pool_size));
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(as_i64(snapshot.pool_available));
        self.pool
            .get_or_create(&PoolLabels { state: "waiting" })
            .set(as_i64(snapshot.pool_waiting));
        self.pool
            .get_or_create(&PoolLabels { state: "max" })
            .set(as_i64(snapshot.pool_max));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
