//! SmokePing's graph of one order: the RTTs of each round as grey smoke, the median as a line
//! coloured by the round's loss, axes in milliseconds, a legend with the median's average,
//! maximum and minimum, the average loss and the period (`spoolmon graph`, the API's
//! `/graph/<id>.png|.svg`).
//!
//! Drawn by librrd's graph (`rrd_graph_v`, through the `rrd` crate), as SmokePing draws it
//! with `rrdtool graph`: the same DEF/CDEF/AREA/STACK construction, so the look is SmokePing's
//! and the cost is librrd's. librrd's graph code keeps global state (its argument parser and
//! font cache) and is not thread-safe: every call holds [`GRAPHING`].
//!
//! The smoke: for N pings sorted per round (`ping1` smallest), the band between the i-th and
//! the (N+1−i)-th RTT is filled with a grey whose darkness grows towards the middle (SmokePing:
//! `int(190/(N/2) × (N/2 − i)) + 50` per channel), so the centre of the distribution is dark
//! and the outliers light (a thumbnail, `legend: false`, draws two of the bands: all the pings
//! and the middle half). The y axis runs from 0 to 1.5 × the largest median of the window
//! (the smoke of a few outliers would otherwise flatten the graph; what is above is clipped
//! at the top edge, as SmokePing clips it).
//!
//! The median's colour is the round's loss, SmokePing's default colours by lost pings of N:
//! 0 green `#26ff00`, 1 `#00b8ff`, 2 `#0059ff`, 3 `#5e00ff`, 4 `#7e00ff`, up to N/2 `#dd00ff`,
//! up to N−1 `#ff0000` (SmokePing's table, keys 0–4, N/2 and N−1). SmokePing draws the
//! median as a band two pixels high; a two-pixel line here, the same to the eye.
//!
//! A thumbnail (no legend: the graph area alone) is drawn by [`super::thumbnail`] instead, in
//! parallel and without librrd's graph: the same construction at one row per pixel column.
//!
//! Owns on disk: nothing; reads `<dir>/<id>/main.rrd` through [`CheckedRrd`] (no symlink
//! followed). Called by `command::graph` and the API.

use super::history::{CheckedRrd, HistoryError, Layout};
use crate::shared::measurement::OrderId;
use crate::spool::beneath::Dir;
use rrd::ops::graph::elements::{
    Area, AreaColor, CDef, ColorWithLegend, Comment, Def, GPrint, GraphElement, Line, VDef, VarName,
};
use rrd::ops::graph::props::{GraphProps, ImageFormat, Labels, Limits, Misc, Size, TimeRange};
use rrd::ops::graph::Color;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

/// librrd's graph is not thread-safe: one graph at a time in this process.
static GRAPHING: Mutex<()> = Mutex::new(());

/// Image formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Svg => "image/svg+xml",
        }
    }

    /// `png` or `svg` (a file's or a URL's extension).
    pub fn from_extension(text: &str) -> Option<Format> {
        match text {
            "png" => Some(Format::Png),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }
}

/// What to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub from: i64,
    pub until: i64,
    pub format: Format,
    /// Size of the graph area, pixels (SmokePing's detail graphs: 600 × 200).
    pub width: u32,
    pub height: u32,
    /// The title (the order id and what it measures).
    pub title: String,
    /// Axes, title and legend; without them only the graph area is drawn (a thumbnail).
    pub legend: bool,
}

/// Largest graph area accepted, pixels per side.
pub const MAX_SIDE: u32 = 4000;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    File(#[from] HistoryError),
    /// The request itself (window, size): answered 400.
    #[error("{0}")]
    Request(String),
    /// librrd could not draw (names the file).
    #[error("{0}")]
    Draw(String),
}

/// SmokePing's loss colours for `pings` pings (its default table, keys 0 to 4, N/2 and N−1,
/// each the most lost pings of its band): (bound, colour, legend).
pub(super) fn loss_colours(pings: u32) -> Vec<(u32, Color, String)> {
    let rgb = |hex: u32| Color {
        red: (hex >> 16) as u8,
        green: (hex >> 8) as u8,
        blue: hex as u8,
        alpha: None,
    };
    let mut bands: Vec<(u32, u32)> = vec![
        (0, 0x26ff00),
        (1, 0x00b8ff),
        (2, 0x0059ff),
        (3, 0x5e00ff),
        (4, 0x7e00ff),
        (pings / 2, 0xdd00ff),
        (pings.saturating_sub(1), 0xff0000),
    ];
    // SmokePing's table is a hash: a later key of the same number wins.
    bands.reverse();
    bands.sort_by_key(|(bound, _)| *bound);
    bands.dedup_by_key(|(bound, _)| *bound);
    bands
        .into_iter()
        .map(|(bound, hex)| {
            let legend = if bound == 0 {
                "0".to_string()
            } else {
                format!("{bound}/{pings}")
            };
            (bound, rgb(hex), legend)
        })
        .collect()
}

/// The smoke's bands, outermost first, as (bottom, top) ping numbers of the sorted pings: every
/// band, or for a thumbnail (no legend) two, all the pings and the middle half, which read 4 of
/// the pings instead of all.
pub(super) fn smoke_bands(pings: u32, legend: bool) -> Vec<(u32, u32)> {
    if legend || pings < 8 {
        (1..=pings / 2)
            .map(|i| (i, pings + 1 - i))
            .filter(|(b, t)| t > b)
            .collect()
    } else {
        vec![(1, pings), (pings / 4 + 1, pings - pings / 4)]
    }
}

/// The grey of the band whose bottom is the `bottom`-th of `pings` sorted pings (SmokePing:
/// `int(190/(N/2) × (N/2 − i)) + 50`, darker towards the middle).
pub(super) fn smoke_grey(pings: u32, bottom: u32) -> u8 {
    let half = f64::from(pings) / 2.0;
    ((190.0 / half * (half - f64::from(bottom))) as i64 + 50).clamp(0, 255) as u8
}

fn var(name: &str) -> VarName {
    VarName::new(name).expect("names here are [a-z0-9_]")
}

/// Draws the order's `main.rrd` from `output/`, or from `archive/` for an archived order.
pub fn draw_order(base: &crate::spool::BaseDir, id: &OrderId, request: &Request) -> Result<Vec<u8>, GraphError> {
    for dir in ["output", "archive"] {
        let parent = match base.dir(dir) {
            Ok(parent) => parent,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(GraphError::File(HistoryError::Io(e))),
        };
        match draw(&parent, id, request) {
            Err(GraphError::File(HistoryError::Missing)) => continue,
            other => return other,
        }
    }
    Err(GraphError::File(HistoryError::Missing))
}

/// Draws `<parent>/<id>/main.rrd`.
pub fn draw(parent: &Dir, id: &OrderId, request: &Request) -> Result<Vec<u8>, GraphError> {
    if request.from >= request.until || request.from < 0 {
        return Err(GraphError::Request(format!(
            "the window {}..{} is empty or before 1970",
            request.from, request.until
        )));
    }
    if !(10..=MAX_SIDE).contains(&request.width) || !(10..=MAX_SIDE).contains(&request.height) {
        return Err(GraphError::Request(format!(
            "width and height are 10 to {MAX_SIDE} pixels"
        )));
    }
    let file = CheckedRrd::open(parent, id)?;
    let info = rrd::ops::info::info(file.librrd_path()).map_err(|e| file.librrd_error(e))?;
    let layout = Layout::from_info(info);
    let has = |name: &str| layout.sources.iter().any(|s| s == name);
    let pings = layout.pings();
    if !has("median") || !has("loss") {
        return Err(GraphError::File(HistoryError::Foreign {
            path: file.path().to_owned(),
            names: layout.sources.join(", "),
        }));
    }
    if !request.legend {
        return super::thumbnail::draw(&file, &layout, request);
    }
    // The y axis: from the medians of the window, SmokePing's way (one fetch of the file
    // already open, at about one row per pixel).
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t as u64);
    let resolution = ((request.until - request.from) as u64 / u64::from(request.width)).max(1);
    let medians = rrd::ops::fetch::fetch(
        file.librrd_path(),
        rrd::ConsolidationFn::Avg,
        at(request.from),
        at(request.until),
        Duration::from_secs(resolution),
    )
    .map_err(|e| file.librrd_error(e))?;
    let median_at = medians.ds_names().iter().position(|s| s == "median");
    let largest = medians
        .rows()
        .iter()
        .filter_map(|row| median_at.map(|i| row.as_slice()[i]))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let upper_ms = (largest * 1000.0 * 1.5).max(0.001);

    let path = file.librrd_path().to_owned();
    let def = |name: &str, source: &str| -> GraphElement {
        Def {
            var_name: var(name),
            rrd: path.clone(),
            ds_name: source.into(),
            consolidation_fn: rrd::ConsolidationFn::Avg,
            step: None,
            start: None,
            end: None,
            reduce: None,
        }
        .into()
    };
    let cdef = |name: &str, rpn: String| -> GraphElement {
        CDef {
            var_name: var(name),
            rpn,
        }
        .into()
    };
    let vdef = |name: &str, rpn: &str| -> GraphElement {
        VDef {
            var_name: var(name),
            rpn: rpn.into(),
        }
        .into()
    };
    let gprint = |name: &str, format: &str| -> GraphElement {
        GPrint {
            var_name: var(name),
            format: format.into(),
        }
        .into()
    };
    let comment = |text: &str| -> GraphElement { Comment { text: text.into() }.into() };
    let mut elements: Vec<GraphElement> = vec![def("median", "median"), def("loss", "loss")];
    elements.push(cdef("med", "median,1000,*".into()));
    let bands = smoke_bands(pings, true);
    let mut read: Vec<u32> = bands.iter().flat_map(|(b, t)| [*b, *t]).collect();
    read.sort_unstable();
    read.dedup();
    for i in read {
        elements.push(def(&format!("ping{i}"), &format!("ping{i}")));
        elements.push(cdef(
            &format!("cp{i}"),
            format!("ping{i},1000,*,{upper_ms},LT,ping{i},1000,*,INF,IF"),
        ));
    }
    for (bottom, top) in bands {
        let grey = smoke_grey(pings, bottom);
        elements.push(cdef(
            &format!("smoke{bottom}"),
            format!("cp{bottom},UN,UNKN,cp{top},cp{bottom},-,IF"),
        ));
        elements.push(
            Area {
                value: var(&format!("cp{bottom}")),
                color: None,
                stack: false,
                skip_scale: true,
            }
            .into(),
        );
        elements.push(
            Area {
                value: var(&format!("smoke{bottom}")),
                color: Some(ColorWithLegend {
                    color: AreaColor::Color(Color {
                        red: grey,
                        green: grey,
                        blue: grey,
                        alpha: None,
                    }),
                    legend: None,
                }),
                stack: true,
                skip_scale: true,
            }
            .into(),
        );
    }
    // The legend's figures (librrd's Comment escapes colons itself; a GPRINT's \l ends a line).
    elements.extend([
        vdef("avmed", "med,AVERAGE"),
        vdef("maxmed", "med,MAXIMUM"),
        vdef("minmed", "med,MINIMUM"),
        vdef("lastmed", "med,LAST"),
        cdef("ploss", format!("loss,{},/,100,*", pings.max(1))),
        vdef("avloss", "ploss,AVERAGE"),
        vdef("maxloss", "ploss,MAXIMUM"),
        comment("median rtt:  "),
        gprint("avmed", "%.3lf ms avg  "),
        gprint("maxmed", "%.3lf ms max  "),
        gprint("minmed", "%.3lf ms min  "),
        gprint("lastmed", "%.3lf ms now\\l"),
        comment("packet loss:  "),
        gprint("avloss", "%.2lf %% avg  "),
        gprint("maxloss", "%.2lf %% max\\l"),
        comment("loss colour (lost/sent):  "),
    ]);
    // The median, one line per loss band, drawn over the smoke.
    let mut below = -1.0f64;
    for (n, (lost, colour, legend)) in loss_colours(pings.max(1)).into_iter().enumerate() {
        let name = format!("me{n}");
        elements.push(cdef(&name, format!("loss,{below},GT,loss,{lost},LE,*,1,UNKN,IF,med,*")));
        elements.push(
            Line {
                width: 2.0,
                value: var(&name),
                color: Some(ColorWithLegend {
                    color: colour,
                    legend: Some(legend.into()),
                }),
                stack: false,
                skip_scale: false,
                dashes: None,
            }
            .into(),
        );
        below = f64::from(lost);
    }
    // `YYYY-MM-DD HH:MM UTC`.
    let shown = |t: i64| format!("{} UTC", &crate::shared::clock::utc_text(t)[..16]);
    elements.push(comment(&format!(
        "{pings} pings every {} s, {} to {}",
        layout.step,
        shown(request.from),
        shown(request.until)
    )));
    let mut misc = Misc::default();
    for tag in [
        rrd::ops::graph::props::ColorTag::ShadeA,
        rrd::ops::graph::props::ColorTag::ShadeB,
        rrd::ops::graph::props::ColorTag::Back,
    ] {
        misc.colors.insert(
            tag,
            Color {
                red: 255,
                green: 255,
                blue: 255,
                alpha: None,
            },
        );
    }
    let props = GraphProps {
        time_range: TimeRange {
            start: Some(at(request.from)),
            end: Some(at(request.until)),
            step_seconds: None,
        },
        labels: Labels {
            title: Some(request.title.clone()),
            vertical_label: Some("RTT (ms)".into()),
        },
        size: Size {
            width: Some(request.width),
            height: Some(request.height),
            ..Size::default()
        },
        limits: Limits {
            upper_limit: Some(upper_ms),
            lower_limit: Some(0.0),
            rigid: true,
            ..Limits::default()
        },
        misc,
        ..GraphProps::default()
    };
    let format = match request.format {
        Format::Png => ImageFormat::Png,
        Format::Svg => ImageFormat::Svg,
    };
    let _one_at_a_time = GRAPHING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (image, _) = rrd::ops::graph::graph(format, &props, &elements)
        .map_err(|e| GraphError::Draw(format!("cannot draw {}: {e}", file.path().display())))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_colours_follow_smokeping_for_any_number_of_pings() {
        let bands: Vec<u32> = loss_colours(20).iter().map(|b| b.0).collect();
        assert_eq!(bands, [0, 1, 2, 3, 4, 10, 19]);
        assert_eq!(loss_colours(20)[6].1.red, 0xff);
        // 3 pings: SmokePing's keys 0..4 with 1 = N/2 (#dd00ff) and 2 = N−1 (#ff0000) replaced.
        let three = loss_colours(3);
        assert_eq!(three.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!((three[1].1.red, three[1].1.blue), (0xdd, 0xff));
        assert_eq!((three[2].1.red, three[2].1.green), (0xff, 0));
        assert_eq!(loss_colours(20)[0].2, "0");
        assert_eq!(loss_colours(20)[1].2, "1/20");
    }
}
