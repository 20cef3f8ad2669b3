//! StatsD (`statsd_url = udp://host:port`, `statsd_prefix`, as Kinto's settings): every request
//! and every group commit and flush is pushed as UDP datagrams from a background thread, so a
//! slow or absent collector never delays a request.

use std::net::UdpSocket;
use std::time::Duration;

use cadence::prelude::*;
use cadence::{QueuingMetricSink, StatsdClient, UdpMetricSink};

pub struct Statsd {
    client: StatsdClient,
}

impl Statsd {
    /// `url` is Kinto's form, `udp://host:port` (the scheme may be left out).
    pub fn connect(url: &str, prefix: &str) -> Result<Statsd, String> {
        let invalid = |why: String| format!("statsd_url {url:?}: {why}");
        let address = url.strip_prefix("udp://").unwrap_or(url).trim_end_matches('/');
        if !address.contains(':') {
            return Err(invalid("expected udp://host:port".into()));
        }
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| invalid(e.to_string()))?;
        socket.set_nonblocking(true).map_err(|e| invalid(e.to_string()))?;
        let sink = UdpMetricSink::from(address, socket).map_err(|e| invalid(e.to_string()))?;
        let client = StatsdClient::builder(prefix, QueuingMetricSink::from(sink))
            .with_error_handler(|err| tracing::debug!(error = %err, "statsd datagram not sent"))
            .build();
        Ok(Statsd { client })
    }

    /// `<prefix>.request.<endpoint>.<method>.<status>` (a count) and
    /// `<prefix>.request_duration.<endpoint>.<method>` (a timer).
    pub fn observe(&self, endpoint: &str, method: &str, status: u16, elapsed: Duration) {
        let method = method.to_ascii_lowercase();
        // Errors are the sink's (a full queue, a refused datagram): handled above, never fatal.
        let _ = self.client.count(&format!("request.{endpoint}.{method}.{status}"), 1);
        let _ = self.client.time(&format!("request_duration.{endpoint}.{method}"), elapsed);
    }

    pub fn applied(&self, events: usize, took: Duration) {
        let _ = self.client.histogram("commit_events", events as u64);
        let _ = self.client.time("commit_apply", took);
    }

    pub fn flushed(&self, took: Duration) {
        let _ = self.client.time("flush", took);
    }
}
