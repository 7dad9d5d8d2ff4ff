//! Frontends, backends and servers: the rows of every process grouped by name with polars and
//! reduced per metric (sum or mean, see [`catalog`](super::catalog)), then written as metrics.
//!
//! Each kind becomes one DataFrame (a key column + one f64 column per wanted metric, moved in
//! without copying) and one lazy `group_by_stable(...).agg(...)` — the pandas `groupby().sum()`
//! / `.mean()` of haproxystats. Keys are name numbers ([`NameTable`]): a proxy's, or for
//! servers a backend's and a server's packed into one u64 (one integer key groups faster than
//! two). Stable grouping keeps HAProxy's order, so output is deterministic. Names are grouped
//! as HAProxy spells them; dots become `_` only in paths.

use super::catalog::{Aggregation, MetricSpec, TOTAL_SERVERS};
use super::names::NameTable;
use super::paths::{graphite_name, GroupedBy, Grouping, MetricBuffer};
use super::stat::Rows;
use polars::prelude::*;
use std::collections::HashMap;

/// Key column of frontends and backends: the proxy's name number.
const PROXY: &str = "proxy";
/// Key column of servers per backend: backend number << 32 | server number.
const PAIR: &str = "pair";
/// Key column of servers across backends: the server's name number.
const SERVER: &str = "server";

/// A grouped table as plain vectors: one entry per group.
struct Grouped {
    keys: Vec<u64>,
    /// `values[j][i]`: the j-th metric of the i-th group.
    values: Vec<Vec<f64>>,
}

/// The names that row numbers stand for.
#[derive(Clone, Copy)]
pub struct Names<'t, 'a> {
    pub proxies: &'t NameTable<'a>,
    pub servers: &'t NameTable<'a>,
}

impl Names<'_, '_> {
    fn proxy(&self, key: u64) -> &str {
        self.proxies.name(key as u32)
    }

    /// Backend and server of a [`PAIR`] key.
    fn pair(&self, key: u64) -> (&str, &str) {
        (self.proxies.name((key >> 32) as u32), self.servers.name(key as u32))
    }
}

/// Frontend rows, grouped by frontend name: `frontend.<f>.<m>`.
pub fn emit_frontends(
    rows: Rows,
    names: Names<'_, '_>,
    specs: &[MetricSpec],
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let grouped = group(proxy_frame(rows, specs)?, PROXY, specs)?;
    for (i, key) in grouped.keys.iter().enumerate() {
        let name = graphite_name(names.proxy(*key));
        let prefixes = grouping.prefixes(GroupedBy::Frontend, &name, &format!("frontend.{name}."));
        emit_row(&prefixes, specs, &grouped.values, i, out);
    }
    Ok(())
}

/// Backend rows, grouped by backend name: `backend.<b>.<m>`.
pub fn emit_backends(
    rows: Rows,
    names: Names<'_, '_>,
    specs: &[MetricSpec],
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let grouped = group(proxy_frame(rows, specs)?, PROXY, specs)?;
    for (i, key) in grouped.keys.iter().enumerate() {
        let prefixes = backend_prefixes(grouping, names.proxy(*key));
        emit_row(&prefixes, specs, &grouped.values, i, out);
    }
    Ok(())
}

/// Server rows: `backend.<b>.TotalServers`, `backend.<b>.server.<s>.<m>` and, with
/// `aggregate_by_name` (aggr-server-metrics), `server.<s>.<m>` across backends.
pub fn emit_servers(
    rows: Rows,
    names: Names<'_, '_>,
    specs: &[MetricSpec],
    aggregate_by_name: bool,
    grouping: &Grouping<'_>,
    out: &mut MetricBuffer,
) -> PolarsResult<()> {
    let servers = server_frame(rows, specs)?;
    let by_backend = group(servers.clone(), PAIR, specs)?;
    emit_total_servers(&by_backend.keys, names, grouping, out);
    for (i, key) in by_backend.keys.iter().enumerate() {
        let (backend, server) = names.pair(*key);
        let (backend, name) = (graphite_name(backend), graphite_name(server));
        let tail = format!("backend.{backend}.server.{name}.");
        let prefixes = grouping.prefixes(GroupedBy::Server, &name, &tail);
        emit_row(&prefixes, specs, &by_backend.values, i, out);
    }
    if aggregate_by_name {
        let by_name = group(servers, SERVER, specs)?;
        for (i, key) in by_name.keys.iter().enumerate() {
            let name = graphite_name(names.servers.name(*key as u32));
            let prefixes = grouping.prefixes(GroupedBy::Server, &name, &format!("server.{name}."));
            emit_row(&prefixes, specs, &by_name.values, i, out);
        }
    }
    Ok(())
}

/// `backend.<b>.TotalServers`: distinct server names per backend, which is the number of
/// (backend, server) groups of each backend — counted here rather than with another polars
/// query (`n_unique`), which cost more than the counting.
fn emit_total_servers(pairs: &[u64], names: Names<'_, '_>, grouping: &Grouping<'_>, out: &mut MetricBuffer) {
    let mut totals: Vec<(u64, usize)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for backend in pairs.iter().map(|pair| pair >> 32) {
        let at = *index.entry(backend).or_insert_with(|| {
            totals.push((backend, 0));
            totals.len() - 1
        });
        totals[at].1 += 1;
    }
    for (backend, total) in totals {
        for prefix in backend_prefixes(grouping, names.proxy(backend)) {
            out.push(&prefix, TOTAL_SERVERS, total as f64);
        }
    }
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

/// Frontend or backend rows as a DataFrame: [`PROXY`], then one column per metric.
fn proxy_frame(rows: Rows, specs: &[MetricSpec]) -> PolarsResult<DataFrame> {
    let keys = UInt32Chunked::from_vec(PROXY.into(), rows.proxies).into_column();
    frame(vec![keys], rows.columns, specs)
}

/// Server rows as a DataFrame: [`PAIR`], [`SERVER`], then one column per metric.
fn server_frame(rows: Rows, specs: &[MetricSpec]) -> PolarsResult<DataFrame> {
    let pairs = rows
        .proxies
        .iter()
        .zip(&rows.servers)
        .map(|(proxy, server)| u64::from(*proxy) << 32 | u64::from(*server))
        .collect();
    let keys = vec![
        UInt64Chunked::from_vec(PAIR.into(), pairs).into_column(),
        UInt32Chunked::from_vec(SERVER.into(), rows.servers).into_column(),
    ];
    frame(keys, rows.columns, specs)
}

fn frame(mut columns: Vec<Column>, values: Vec<Vec<f64>>, specs: &[MetricSpec]) -> PolarsResult<DataFrame> {
    let height = columns.first().map_or(0, Column::len);
    for ((name, _), values) in specs.iter().zip(values) {
        columns.push(Float64Chunked::from_vec((*name).into(), values).into_column());
    }
    DataFrame::new(height, columns)
}

/// Groups `frame` by `key` (in order of first appearance) and reduces every metric column.
fn group(frame: DataFrame, key: &str, specs: &[MetricSpec]) -> PolarsResult<Grouped> {
    let reductions: Vec<Expr> = specs
        .iter()
        .map(|(name, aggregation)| match aggregation {
            Aggregation::Sum => col(*name).sum(),
            Aggregation::Mean => col(*name).mean(),
        })
        .collect();
    let grouped = frame.lazy().group_by_stable([col(key)]).agg(reductions).collect()?;
    let keys = grouped.column(key)?.cast(&DataType::UInt64)?;
    Ok(Grouped {
        // A group key is never null: its rows had it.
        keys: keys.u64()?.into_no_null_iter().collect(),
        values: specs
            .iter()
            .map(|(name, _)| floats(&grouped, name))
            .collect::<PolarsResult<_>>()?,
    })
}

/// A float column; a null (never produced for a non-empty group) becomes NaN, which sinks drop.
/// Without nulls (always, in practice) the values are copied as they are: the `Option` per
/// value of the general path showed in profiles.
fn floats(frame: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    let column = frame.column(name)?.f64()?;
    if column.null_count() == 0 {
        return Ok(column.into_no_null_iter().collect());
    }
    Ok(column.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::catalog::Aggregation::{Mean, Sum};
    use super::super::options::HaproxyOptions;
    use super::*;

    const SPECS: [MetricSpec; 2] = [("stot", Sum), ("rtime", Mean)];

    /// Rows named through `proxy_names`/`server_names` (servers only when `servers` is given).
    fn rows<'a>(
        tables: &mut (NameTable<'a>, NameTable<'a>),
        proxies: &[&'a str],
        servers: &[&'a str],
        stot: &[f64],
        rtime: &[f64],
    ) -> Rows {
        Rows {
            proxies: proxies.iter().map(|p| tables.0.id(p)).collect(),
            servers: servers.iter().map(|s| tables.1.id(s)).collect(),
            columns: vec![stot.to_vec(), rtime.to_vec()],
        }
    }

    fn names<'t, 'a>(tables: &'t (NameTable<'a>, NameTable<'a>)) -> Names<'t, 'a> {
        Names {
            proxies: &tables.0,
            servers: &tables.1,
        }
    }

    fn emitted(out: MetricBuffer) -> Vec<(String, f64)> {
        out.into_metrics().into_iter().map(|m| (m.path, m.value)).collect()
    }

    #[test]
    fn groups_keep_first_appearance_order_and_reduce_each_metric_its_way() {
        let options = HaproxyOptions::default();
        let mut out = MetricBuffer::new(0, 8);
        let mut tables = Default::default();
        let input = rows(
            &mut tables,
            &["b.x", "a", "b.x"],
            &[],
            &[1.0, 2.0, 3.0],
            &[10.0, 20.0, 40.0],
        );
        emit_backends(input, names(&tables), &SPECS, &Grouping::new(&options), &mut out).unwrap();
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
        let mut tables = Default::default();
        let input = rows(
            &mut tables,
            &["be", "be", "be", "other"],
            &["s1", "s2", "s1", "s1"],
            &[1.0, 2.0, 3.0, 4.0],
            &[0.0, 0.0, 0.0, 6.0],
        );
        emit_servers(input, names(&tables), &SPECS, true, &Grouping::new(&options), &mut out).unwrap();
        let metrics = emitted(out);
        let value = |path: &str| metrics.iter().find(|(p, _)| p == path).map(|(_, v)| *v);
        assert_eq!(value("haproxy.backend.be.TotalServers"), Some(2.0));
        assert_eq!(value("haproxy.backend.other.TotalServers"), Some(1.0));
        assert_eq!(value("haproxy.backend.be.server.s1.stot"), Some(4.0));
        assert_eq!(value("haproxy.backend.other.server.s1.rtime"), Some(6.0));
        assert_eq!(value("haproxy.server.s1.stot"), Some(8.0));
        assert_eq!(value("haproxy.server.s1.rtime"), Some(2.0));
        assert_eq!(metrics.len(), 2 + 3 * 2 + 2 * 2);
    }

    #[test]
    fn no_rows_means_no_metrics() {
        let options = HaproxyOptions::default();
        let mut out = MetricBuffer::new(0, 0);
        let mut tables = Default::default();
        let grouping = Grouping::new(&options);
        let empty = rows(&mut tables, &[], &[], &[], &[]);
        emit_servers(empty, names(&tables), &SPECS, true, &grouping, &mut out).unwrap();
        let empty = rows(&mut tables, &[], &[], &[], &[]);
        emit_frontends(empty, names(&tables), &SPECS, &grouping, &mut out).unwrap();
        assert_eq!(out.len(), 0);
    }
}
