//! Daemon metrics from `show info`: sums and averages across processes, CpuUsagePct statistics,
//! `calculate-percentages` and `per-process-metrics`.
//!
//! Plain Rust, not polars: it is ~40 numbers from a handful of processes, where building a
//! DataFrame would cost more than the arithmetic.

use super::catalog::{CPU_PERCENTILES, DAEMON_MEANS, DAEMON_PERCENTAGES, DAEMON_SUMS, IDLE_PCT};
use super::info::DaemonFields;
use super::options::HaproxyOptions;
use super::paths::{graphite_name, MetricBuffer, DAEMON};

/// Name of the CPU usage (100 - Idle_pct) of one process.
const CPU_USAGE: &str = "CpuUsagePct";
/// Name of the sample standard deviation of the processes' CpuUsagePct.
const CPU_STD: &str = "StdCpuUsagePct";

/// Appends every daemon metric of `processes` to `out`.
pub fn emit_daemon(processes: &[DaemonFields], options: &HaproxyOptions, out: &mut MetricBuffer) {
    let total = |key: &str| processes.iter().filter_map(|p| p.get(key)).sum::<f64>();
    for key in DAEMON_SUMS {
        out.push(DAEMON, key, total(key));
    }
    for key in DAEMON_MEANS {
        let values: Vec<f64> = processes.iter().filter_map(|p| p.get(key)).collect();
        if !values.is_empty() {
            out.push(DAEMON, key, values.iter().sum::<f64>() / values.len() as f64);
        }
    }
    emit_cpu_statistics(processes, out);
    if options.calculate_percentages {
        emit_percentages(DAEMON, &total, out);
    }
    if options.per_process_metrics {
        for process in processes {
            emit_process(process, options, out);
        }
    }
}

/// Percentiles and standard deviation of CpuUsagePct, when more than one process reports it.
fn emit_cpu_statistics(processes: &[DaemonFields], out: &mut MetricBuffer) {
    let mut usage: Vec<f64> = processes.iter().filter_map(cpu_usage).collect();
    if usage.len() < 2 {
        return;
    }
    usage.sort_by(f64::total_cmp);
    for (percent, name) in CPU_PERCENTILES {
        out.push(DAEMON, name, nearest_rank(&usage, percent));
    }
    out.push(DAEMON, CPU_STD, sample_std(&usage));
}

fn cpu_usage(process: &DaemonFields) -> Option<f64> {
    process.get(IDLE_PCT).map(|idle| 100.0 - idle)
}

/// `daemon.process.<socket>.<m>`: the summed metrics of one process, its CpuUsagePct and, with
/// `calculate-percentages`, its percentages. Keyed by socket name, which is unique per snapshot
/// even across separate HAProxy instances (they all report Process_num 1).
fn emit_process(process: &DaemonFields, options: &HaproxyOptions, out: &mut MetricBuffer) {
    let prefix = format!("{DAEMON}process.{}.", graphite_name(&process.socket));
    let value = |key: &str| process.get(key).unwrap_or(0.0);
    for key in DAEMON_SUMS {
        out.push(&prefix, key, value(key));
    }
    if let Some(usage) = cpu_usage(process) {
        out.push(&prefix, CPU_USAGE, usage);
    }
    if options.calculate_percentages {
        emit_percentages(&prefix, &value, out);
    }
}

fn emit_percentages(prefix: &str, value: &dyn Fn(&str) -> f64, out: &mut MetricBuffer) {
    for (name, numerator, denominator) in DAEMON_PERCENTAGES {
        out.push(prefix, name, percentage(value(numerator), value(denominator)));
    }
}

/// `int(100 * part / whole)` (truncated toward zero), 0 when `whole` is 0.
fn percentage(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        (100.0 * part / whole).trunc()
    }
}

/// Nearest-rank percentile of sorted `values`: the smallest value with at least `percent`% of
/// the values at or below it.
fn nearest_rank(sorted: &[f64], percent: u32) -> f64 {
    let rank = (f64::from(percent) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sample (n - 1) standard deviation; at least two values.
fn sample_std(values: &[f64]) -> f64 {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::super::info::parse_info;
    use super::*;
    use crate::shared::measurement::Metric;
    use std::collections::BTreeMap;

    fn process(socket: &str, text: &str) -> DaemonFields {
        parse_info("x_info", socket, &format!("{text}\n")).unwrap()
    }

    fn run(processes: &[DaemonFields], options: &HaproxyOptions) -> BTreeMap<String, f64> {
        let mut out = MetricBuffer::new(1, 64);
        emit_daemon(processes, options, &mut out);
        let metrics: Vec<Metric> = out.into_metrics();
        let count = metrics.len();
        let map: BTreeMap<_, _> = metrics.into_iter().map(|m| (m.path, m.value)).collect();
        assert_eq!(map.len(), count, "duplicate paths");
        map
    }

    fn four() -> Vec<DaemonFields> {
        [
            ("a", 90, 100, 7, 1),
            ("b", 60, 200, 5, 0),
            ("c", 80, 100, 9, 0),
            ("d", 100, 0, 11, 0),
        ]
        .iter()
        .map(|(socket, idle, maxconn, uptime, curr)| {
            process(
                socket,
                &format!("Idle_pct: {idle}\nMaxconn: {maxconn}\nUptime_sec: {uptime}\nCurrConns: {curr}\n"),
            )
        })
        .collect()
    }

    #[test]
    fn sums_means_and_cpu_statistics() {
        let metrics = run(&four(), &HaproxyOptions::default());
        assert_eq!(metrics["haproxy.daemon.Maxconn"], 400.0);
        assert_eq!(metrics["haproxy.daemon.MaxZlibMemUsage"], 0.0);
        assert_eq!(metrics["haproxy.daemon.Uptime_sec"], 8.0);
        assert_eq!(metrics["haproxy.daemon.Idle_pct"], 82.5);
        // CpuUsagePct sorted: 0, 10, 20, 40.
        assert_eq!(metrics["haproxy.daemon.25PercentileCpuUsagePct"], 0.0);
        assert_eq!(metrics["haproxy.daemon.50PercentileCpuUsagePct"], 10.0);
        assert_eq!(metrics["haproxy.daemon.75PercentileCpuUsagePct"], 20.0);
        assert_eq!(metrics["haproxy.daemon.99PercentileCpuUsagePct"], 40.0);
        assert!((metrics["haproxy.daemon.StdCpuUsagePct"] - 17.078_251_276_599_33).abs() < 1e-9);
        assert!(!metrics.contains_key("haproxy.daemon.CpuUsagePct"));
        assert!(!metrics
            .keys()
            .any(|k| k.contains("Percentage") || k.contains(".process.")));
        assert_eq!(metrics.len(), 37 + 2 + 6);
    }

    #[test]
    fn one_process_has_no_cpu_statistics() {
        let metrics = run(&four()[..1], &HaproxyOptions::default());
        assert!(!metrics.keys().any(|k| k.contains("CpuUsagePct")));
    }

    #[test]
    fn percentages_truncate_and_survive_a_zero_limit() {
        let options = HaproxyOptions {
            calculate_percentages: true,
            per_process_metrics: true,
            ..HaproxyOptions::default()
        };
        let metrics = run(&four(), &options);
        // CurrConns 1 of Maxconn 400: 0.25% truncates to 0; process a: 1 of 100 = 1%.
        assert_eq!(metrics["haproxy.daemon.ConnPercentage"], 0.0);
        assert_eq!(metrics["haproxy.daemon.process.a.ConnPercentage"], 1.0);
        assert_eq!(metrics["haproxy.daemon.process.d.ConnPercentage"], 0.0);
        assert_eq!(metrics["haproxy.daemon.SslRatePercentage"], 0.0);
        assert_eq!(metrics["haproxy.daemon.process.b.CpuUsagePct"], 40.0);
        assert_eq!(metrics["haproxy.daemon.process.c.Maxconn"], 100.0);
        assert_eq!(percentage(2.0, 3.0), 66.0);
    }

    #[test]
    fn processes_are_keyed_by_socket_so_instances_do_not_collide() {
        let options = HaproxyOptions {
            per_process_metrics: true,
            ..HaproxyOptions::default()
        };
        let one = process("lb.one.sock", "Process_num: 1\nMaxconn: 10\n");
        let two = process("lb.two.sock", "Process_num: 1\nMaxconn: 20\n");
        let metrics = run(&[one, two], &options);
        assert_eq!(metrics["haproxy.daemon.process.lb_one_sock.Maxconn"], 10.0);
        assert_eq!(metrics["haproxy.daemon.process.lb_two_sock.Maxconn"], 20.0);
        assert!(!metrics.keys().any(|k| k.contains(".process.1.")));
    }
}
