//! The metric names haproxystats 0.5.1 sends, per kind, and how each one is aggregated across
//! processes. These lists are what dashboards depend on; they were checked against every path
//! 0.5.1 sends for a real snapshot (`tests/haproxy_parity.rs`).

/// How the values of several rows (processes, or servers of one name) become one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// Counters, gauges and — as in haproxystats — limits and maxima too.
    Sum,
    /// Weights, server counts and response times.
    Mean,
}

/// One metric: its field name (a `show info` key or a `show stat` column) and its aggregation.
pub type MetricSpec = (&'static str, Aggregation);

use Aggregation::{Mean, Sum};

/// `show info` keys summed across processes.
pub const DAEMON_SUMS: [&str; 37] = [
    "CompressBpsIn",
    "CompressBpsOut",
    "CompressBpsRateLim",
    "ConnRate",
    "ConnRateLimit",
    "CumConns",
    "CumReq",
    "CumSslConns",
    "CurrConns",
    "CurrSslConns",
    "Hard_maxconn",
    "MaxConnRate",
    "MaxSessRate",
    "MaxSslConns",
    "MaxSslRate",
    "MaxZlibMemUsage",
    "Maxconn",
    "Maxpipes",
    "Maxsock",
    "Memmax_MB",
    "PipesFree",
    "PipesUsed",
    "Run_queue",
    "SessRate",
    "SessRateLimit",
    "SslBackendKeyRate",
    "SslBackendMaxKeyRate",
    "SslCacheLookups",
    "SslCacheMisses",
    "SslFrontendKeyRate",
    "SslFrontendMaxKeyRate",
    "SslFrontendSessionReuse_pct",
    "SslRate",
    "SslRateLimit",
    "Tasks",
    "Ulimit-n",
    "ZlibMemUsage",
];

/// `show info` keys averaged across processes.
pub const DAEMON_MEANS: [&str; 2] = ["Idle_pct", "Uptime_sec"];

/// The `show info` key that CpuUsagePct (100 - Idle_pct) derives from.
pub const IDLE_PCT: &str = "Idle_pct";

/// `calculate-percentages`: (sent name, numerator key, denominator key).
pub const DAEMON_PERCENTAGES: [(&str, &str, &str); 4] = [
    ("ConnPercentage", "CurrConns", "Maxconn"),
    ("ConnRatePercentage", "ConnRate", "ConnRateLimit"),
    ("SslConnPercentage", "CurrSslConns", "MaxSslConns"),
    ("SslRatePercentage", "SslRate", "SslRateLimit"),
];

/// Percentiles of the processes' CpuUsagePct sent when there is more than one process.
pub const CPU_PERCENTILES: [(u32, &str); 5] = [
    (25, "25PercentileCpuUsagePct"),
    (50, "50PercentileCpuUsagePct"),
    (75, "75PercentileCpuUsagePct"),
    (95, "95PercentileCpuUsagePct"),
    (99, "99PercentileCpuUsagePct"),
];

/// Frontend rows (`svname` FRONTEND): every metric is summed.
pub const FRONTEND: [MetricSpec; 31] = [
    ("comp_byp", Sum),
    ("comp_in", Sum),
    ("comp_out", Sum),
    ("comp_rsp", Sum),
    ("conn_rate", Sum),
    ("conn_rate_max", Sum),
    ("conn_tot", Sum),
    ("dcon", Sum),
    ("dses", Sum),
    ("dreq", Sum),
    ("ereq", Sum),
    ("intercepted", Sum),
    ("rate_lim", Sum),
    ("req_rate", Sum),
    ("req_rate_max", Sum),
    ("req_tot", Sum),
    ("bin", Sum),
    ("bout", Sum),
    ("dresp", Sum),
    ("hrsp_1xx", Sum),
    ("hrsp_2xx", Sum),
    ("hrsp_3xx", Sum),
    ("hrsp_4xx", Sum),
    ("hrsp_5xx", Sum),
    ("hrsp_other", Sum),
    ("rate", Sum),
    ("rate_max", Sum),
    ("scur", Sum),
    ("slim", Sum),
    ("smax", Sum),
    ("stot", Sum),
];

/// Backend rows (`svname` BACKEND). `TotalServers` is added to these (see [`TOTAL_SERVERS`]).
pub const BACKEND: [MetricSpec; 40] = [
    ("chkdown", Sum),
    ("cli_abrt", Sum),
    ("comp_byp", Sum),
    ("comp_in", Sum),
    ("comp_out", Sum),
    ("comp_rsp", Sum),
    ("downtime", Sum),
    ("dreq", Sum),
    ("econ", Sum),
    ("eresp", Sum),
    ("intercepted", Sum),
    ("lbtot", Sum),
    ("qcur", Sum),
    ("qmax", Sum),
    ("req_tot", Sum),
    ("srv_abrt", Sum),
    ("wredis", Sum),
    ("wretr", Sum),
    ("bin", Sum),
    ("bout", Sum),
    ("dresp", Sum),
    ("hrsp_1xx", Sum),
    ("hrsp_2xx", Sum),
    ("hrsp_3xx", Sum),
    ("hrsp_4xx", Sum),
    ("hrsp_5xx", Sum),
    ("hrsp_other", Sum),
    ("rate", Sum),
    ("rate_max", Sum),
    ("scur", Sum),
    ("slim", Sum),
    ("smax", Sum),
    ("stot", Sum),
    ("act", Mean),
    ("bck", Mean),
    ("weight", Mean),
    ("rtime", Mean),
    ("ctime", Mean),
    ("qtime", Mean),
    ("ttime", Mean),
];

/// Number of distinct servers of a backend, sent with every backend.
pub const TOTAL_SERVERS: &str = "TotalServers";

/// Server rows (`type` 2), per backend and server name, and per server name with
/// `aggr-server-metrics`.
pub const SERVER: [MetricSpec; 32] = [
    ("chkfail", Sum),
    ("chkdown", Sum),
    ("cli_abrt", Sum),
    ("econ", Sum),
    ("eresp", Sum),
    ("lbtot", Sum),
    ("qcur", Sum),
    ("qmax", Sum),
    ("srv_abrt", Sum),
    ("wredis", Sum),
    ("wretr", Sum),
    ("bin", Sum),
    ("bout", Sum),
    ("dresp", Sum),
    ("hrsp_1xx", Sum),
    ("hrsp_2xx", Sum),
    ("hrsp_3xx", Sum),
    ("hrsp_4xx", Sum),
    ("hrsp_5xx", Sum),
    ("hrsp_other", Sum),
    ("rate", Sum),
    ("rate_max", Sum),
    ("scur", Sum),
    ("slim", Sum),
    ("smax", Sum),
    ("stot", Sum),
    ("throttle", Mean),
    ("weight", Mean),
    ("ctime", Mean),
    ("qtime", Mean),
    ("rtime", Mean),
    ("ttime", Mean),
];

/// The specs of `catalog` whose names are in `selection` (in catalog order), or all of them
/// without a selection. Names not in the catalog are left out; options validation refuses them.
pub fn select(catalog: &[MetricSpec], selection: Option<&[String]>) -> Vec<MetricSpec> {
    match selection {
        None => catalog.to_vec(),
        Some(names) => catalog
            .iter()
            .filter(|(name, _)| names.iter().any(|n| n == name))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalogs_have_no_duplicate_names() {
        for catalog in [&FRONTEND[..], &BACKEND[..], &SERVER[..]] {
            let names: HashSet<_> = catalog.iter().map(|(n, _)| n).collect();
            assert_eq!(names.len(), catalog.len());
        }
        let daemon: HashSet<_> = DAEMON_SUMS.iter().chain(&DAEMON_MEANS).collect();
        assert_eq!(daemon.len(), DAEMON_SUMS.len() + DAEMON_MEANS.len());
    }

    #[test]
    fn a_selection_keeps_catalog_order_and_aggregation() {
        let picked = select(&BACKEND, Some(&["ttime".to_string(), "scur".to_string()]));
        assert_eq!(picked, vec![("scur", Sum), ("ttime", Mean)]);
        assert_eq!(select(&SERVER, None).len(), 32);
    }

    #[test]
    fn percentage_inputs_are_summed_daemon_keys() {
        for (_, numerator, denominator) in DAEMON_PERCENTAGES {
            assert!(DAEMON_SUMS.contains(&numerator) && DAEMON_SUMS.contains(&denominator));
        }
    }
}
