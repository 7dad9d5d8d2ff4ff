//! Frontends, backends and servers: the rows of every process grouped by name with polars and
//! reduced per metric (sum or mean, see [`catalog`](super::catalog)), then written as metrics.
//!
//! Each kind becomes one DataFrame (name columns + one f64 column per wanted metric, moved in
//! without copying) and one lazy `group_by_stable(...).agg(...)` — the pandas `groupby().sum()`
//! / `.mean()` of haproxystats. Stable grouping keeps HAProxy's order, so output is
//! deterministic. Rows keep the names as HAProxy spells them; dots become `_` only in paths.

use super::catalog::{Aggregation, MetricSpec, TOTAL_SERVERS};
use super::paths::{graphite_name, GroupedBy, Grouping, MetricBuffer};
use super::stat::Rows;
use polars::prelude::*;

const PROXY: &str = "proxy";
const SERVER: &str = "server";

/// A grouped table as plain vectors: one entry per group.
struct Grouped {
    proxies: Vec<String>,
    servers: Vec<String>,
    /// `values[j][i]`: the j-th metric of the i-th group.
    values: Vec<Vec<f64>>,
}

/// Frontend rows, grouped by frontend name: `frontend.<f>.<m>`.
pub fn emit_frontends(
    rows: Rows<'_>,
    specs: &[MetricSpec],
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let grouped = group(frame(rows, specs, false)?, &[PROXY], specs)?;
    for (i, proxy) in grouped.proxies.iter().enumerate() {
        let name = graphite_name(proxy);
        let prefixes = grouping.prefixes(GroupedBy::Frontend, &name, &format!("frontend.{name}."));
        emit_row(&prefixes, specs, &grouped.values, i, out);
    }
    Ok(())
}

/// Backend rows, grouped by backend name: `backend.<b>.<m>`.
pub fn emit_backends(
    rows: Rows<'_>,
    specs: &[MetricSpec],
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let grouped = group(frame(rows, specs, false)?, &[PROXY], specs)?;
    for (i, proxy) in grouped.proxies.iter().enumerate() {
        let prefixes = backend_prefixes(grouping, proxy);
        emit_row(&prefixes, specs, &grouped.values, i, out);
    }
    Ok(())
}

/// Server rows: `backend.<b>.TotalServers`, `backend.<b>.server.<s>.<m>` and, with
/// `aggregate_by_name` (aggr-server-metrics), `server.<s>.<m>` across backends.
pub fn emit_servers(
    rows: Rows<'_>,
    specs: &[MetricSpec],
    aggregate_by_name: bool,
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let servers = frame(rows, specs, true)?;
    emit_total_servers(&servers, grouping, out)?;
    let by_backend = group(servers.clone(), &[PROXY, SERVER], specs)?;
    for (i, (proxy, server)) in by_backend.proxies.iter().zip(&by_backend.servers).enumerate() {
        let (backend, name) = (graphite_name(proxy), graphite_name(server));
        let tail = format!("backend.{backend}.server.{name}.");
        emit_row(
            &grouping.prefixes(GroupedBy::Server, &name, &tail),
            specs,
            &by_backend.values,
            i,
            out,
        );
    }
    if aggregate_by_name {
        let by_name = group(servers, &[SERVER], specs)?;
        for (i, server) in by_name.servers.iter().enumerate() {
            let name = graphite_name(server);
            let prefixes = grouping.prefixes(GroupedBy::Server, &name, &format!("server.{name}."));
            emit_row(&prefixes, specs, &by_name.values, i, out);
        }
    }
    Ok(())
}

/// `backend.<b>.TotalServers`: distinct server names per backend.
fn emit_total_servers(servers: &DataFrame, grouping: &Grouping<'_>, out: &mut MetricBuffer) -> PolarsResult<()> {
    let counts = servers
        .clone()
        .lazy()
        .group_by_stable([col(PROXY)])
        .agg([col(SERVER).n_unique().cast(DataType::Float64).alias(TOTAL_SERVERS)])
        .collect()?;
    for (proxy, total) in strings(&counts, PROXY)?
        .into_iter()
        .zip(floats(&counts, TOTAL_SERVERS)?)
    {
        for prefix in backend_prefixes(grouping, proxy) {
            out.push(&prefix, TOTAL_SERVERS, total);
        }
    }
    Ok(())
}

fn backend_prefixes(grouping: &Grouping<'_>, proxy: &str) -> Vec<String> {
    let name = graphite_name(proxy);
    grouping.prefixes(GroupedBy::Backend, &name, &format!("backend.{name}."))
}

/// Writes the i-th group's metrics under each prefix.
fn emit_row(prefixes: &[String], specs: &[MetricSpec], values: &[Vec<f64>], i: usize, out: &mut MetricBuffer) {
    for prefix in prefixes {
        for ((metric, _), column) in specs.iter().zip(values) {
            out.push(prefix, metric, column[i]);
        }
    }
}

/// The rows as a DataFrame: `proxy`, `server` (for server rows), then one column per metric.
fn frame(rows: Rows<'_>, specs: &[MetricSpec], with_servers: bool) -> PolarsResult<DataFrame> {
    let height = rows.len();
    let mut columns = Vec::with_capacity(specs.len() + 2);
    columns.push(Series::new(PROXY.into(), rows.proxies.as_slice()).into_column());
    if with_servers {
        columns.push(Series::new(SERVER.into(), rows.servers.as_slice()).into_column());
    }
    for ((name, _), values) in specs.iter().zip(rows.columns) {
        columns.push(Float64Chunked::from_vec((*name).into(), values).into_column());
    }
    DataFrame::new(height, columns)
}

/// Groups `frame` by `keys` (in order of first appearance) and reduces every metric column.
fn group(frame: DataFrame, keys: &[&str], specs: &[MetricSpec]) -> PolarsResult<Grouped> {
    let reductions: Vec<Expr> = specs
        .iter()
        .map(|(name, aggregation)| match aggregation {
            Aggregation::Sum => col(*name).sum(),
            Aggregation::Mean => col(*name).mean(),
        })
        .collect();
    let by: Vec<Expr> = keys.iter().map(|key| col(*key)).collect();
    let grouped = frame.lazy().group_by_stable(by).agg(reductions).collect()?;
    let owned = |key: &str| -> PolarsResult<Vec<String>> {
        if !keys.contains(&key) {
            return Ok(Vec::new());
        }
        Ok(strings(&grouped, key)?.into_iter().map(String::from).collect())
    };
    Ok(Grouped {
        proxies: owned(PROXY)?,
        servers: owned(SERVER)?,
        values: specs
            .iter()
            .map(|(name, _)| floats(&grouped, name))
            .collect::<PolarsResult<_>>()?,
    })
}

fn strings<'f>(frame: &'f DataFrame, name: &str) -> PolarsResult<Vec<&'f str>> {
    Ok(frame
        .column(name)?
        .str()?
        .iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// A float column; a null (never produced for a non-empty group) becomes NaN, which sinks drop.
fn floats(frame: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    Ok(frame
        .column(name)?
        .f64()?
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::catalog::Aggregation::{Mean, Sum};
    use super::super::options::HaproxyOptions;
    use super::*;

    const SPECS: [MetricSpec; 2] = [("stot", Sum), ("rtime", Mean)];

    fn rows<'a>(proxies: &[&'a str], servers: &[&'a str], stot: &[f64], rtime: &[f64]) -> Rows<'a> {
        Rows {
            proxies: proxies.to_vec(),
            servers: servers.to_vec(),
            columns: vec![stot.to_vec(), rtime.to_vec()],
        }
    }

    fn emitted(out: MetricBuffer) -> Vec<(String, f64)> {
        out.into_metrics().into_iter().map(|m| (m.path, m.value)).collect()
    }

    #[test]
    fn groups_keep_first_appearance_order_and_reduce_each_metric_its_way() {
        let options = HaproxyOptions::default();
        let mut out = MetricBuffer::new(0, 8);
        let input = rows(&["b.x", "a", "b.x"], &[], &[1.0, 2.0, 3.0], &[10.0, 20.0, 40.0]);
        emit_backends(input, &SPECS, &Grouping::new(&options), &mut out).unwrap();
        assert_eq!(
            emitted(out),
            [
                ("haproxy.backend.b_x.stot".to_string(), 4.0),
                ("haproxy.backend.b_x.rtime".to_string(), 25.0),
                ("haproxy.backend.a.stot".to_string(), 2.0),
                ("haproxy.backend.a.rtime".to_string(), 20.0),
            ]
        );
    }

    #[test]
    fn servers_are_counted_once_per_backend_and_aggregated_by_name_on_request() {
        let options = HaproxyOptions::default();
        let mut out = MetricBuffer::new(0, 32);
        let input = rows(
            &["be", "be", "be", "other"],
            &["s1", "s2", "s1", "s1"],
            &[1.0, 2.0, 3.0, 4.0],
            &[0.0, 0.0, 0.0, 6.0],
        );
        emit_servers(input, &SPECS, true, &Grouping::new(&options), &mut out).unwrap();
        let metrics = emitted(out);
        let value = |path: &str| metrics.iter().find(|(p, _)| p == path).map(|(_, v)| *v);
        assert_eq!(value("haproxy.backend.be.TotalServers"), Some(2.0));
        assert_eq!(value("haproxy.backend.other.TotalServers"), Some(1.0));
        assert_eq!(value("haproxy.backend.be.server.s1.stot"), Some(4.0));
        assert_eq!(value("haproxy.server.s1.stot"), Some(8.0));
        assert_eq!(value("haproxy.server.s1.rtime"), Some(2.0));
        assert_eq!(metrics.len(), 2 + 3 * 2 + 2 * 2);
    }

    #[test]
    fn no_rows_means_no_metrics() {
        let options = HaproxyOptions::default();
        let mut out = MetricBuffer::new(0, 0);
        emit_servers(
            rows(&[], &[], &[], &[]),
            &SPECS,
            true,
            &Grouping::new(&options),
            &mut out,
        )
        .unwrap();
        emit_frontends(rows(&[], &[], &[], &[]), &SPECS, &Grouping::new(&options), &mut out).unwrap();
        assert_eq!(out.len(), 0);
    }
}
