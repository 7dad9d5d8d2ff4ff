//! A thumbnail of one order: SmokePing's smoke and loss-coloured median over the graph area
//! alone, without axes, title or legend: what the web page's orders table shows per order
//! (`/graph/<id>.png|.svg?legend=0`).
//!
//! Drawn here, pixel by pixel, not by librrd's graph as the full graph is ([`super::graph`]):
//! librrd's graph is not thread-safe, so a page of 100 thumbnails waited for 100 graphs drawn
//! one after the other (0.9-1.25 s on a 2-vCPU machine, BENCHMARKS.md). A thumbnail is one
//! `rrd_fetch_r` (thread-safe) and a few thousand pixel writes, in parallel over the server's
//! workers. The construction is the full graph's, at one row per column: the y axis from 0 to
//! 1.5 × the largest median of the window, RTTs above it clipped at the top edge; the smoke as
//! the same bands in the same greys ([`super::graph::smoke_bands`]); the median two pixels
//! high in SmokePing's loss colour of its round, joined to its neighbours as a line is.
//!
//! The image is a PNG (RGB, one IDAT, zlib) or an SVG of one-pixel-wide runs; both are the
//! same raster.
//!
//! Owns on disk: nothing; reads `main.rrd` through an already checked [`CheckedRrd`]. Called
//! by [`super::graph::draw`] for requests without a legend.

use super::graph::{loss_colours, smoke_bands, smoke_grey, Format, GraphError, Request};
use super::history::{CheckedRrd, Layout};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];

/// What one column of the thumbnail shows: the sorted pings' values and the median, in seconds
/// (NaN unknown), and the round's loss.
#[derive(Clone, Debug, Default, PartialEq)]
struct Column {
    pings: Vec<f64>,
    median: f64,
    loss: f64,
}

/// Draws the thumbnail of `file` (whose layout has `median` and `loss`).
pub(super) fn draw(file: &CheckedRrd, layout: &Layout, request: &Request) -> Result<Vec<u8>, GraphError> {
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t as u64);
    let span = request.until - request.from;
    let resolution = (span as u64 / u64::from(request.width)).max(1);
    let data = rrd::ops::fetch::fetch(
        file.librrd_path(),
        rrd::ConsolidationFn::Avg,
        at(request.from),
        at(request.until),
        Duration::from_secs(resolution),
    )
    .map_err(|e| GraphError::File(file.librrd_error(e)))?;
    let names = data.ds_names();
    let index = |name: &str| names.iter().position(|n| n == name);
    let pings = layout.pings();
    let (Some(median_at), Some(loss_at)) = (index("median"), index("loss")) else {
        return Err(GraphError::Draw(format!(
            "{} has no median or loss to draw",
            file.path().display()
        )));
    };
    let ping_at: Vec<Option<usize>> = (1..=pings).map(|i| index(&format!("ping{i}"))).collect();
    let rows: Vec<Column> = data
        .rows()
        .iter()
        .map(|row| {
            let values = row.as_slice();
            Column {
                pings: ping_at.iter().map(|i| i.map_or(f64::NAN, |i| values[i])).collect(),
                median: values[median_at],
                loss: values[loss_at],
            }
        })
        .collect();
    let first = crate::shared::clock::unix_secs(data.start());
    let step = data.step().as_secs().max(1) as i64;
    // Row i holds the interval (first + i·step, first + (i+1)·step]. A column shows the average
    // of the rows ending within its time (librrd's graph consolidates rows to pixels the same
    // way, so a lossy round narrower than a pixel still colours it), or, for rows coarser than
    // a column, the row holding the middle of its time.
    let width = i64::from(request.width);
    let row_index = |t: i64| (t - first).div_euclid(step).clamp(0, rows.len() as i64) as usize;
    let columns: Vec<Option<Column>> = (0..width)
        .map(|x| {
            let (start, end) = (request.from + x * span / width, request.from + (x + 1) * span / width);
            // The rows ending in (start, end].
            let within: Vec<&Column> = rows[row_index(start)..row_index(end).max(row_index(start))]
                .iter()
                .collect();
            if within.is_empty() {
                let middle = request.from + (2 * x + 1) * span / (2 * width);
                return (middle > first)
                    .then(|| rows.get(((middle - first - 1) / step) as usize).cloned())
                    .flatten();
            }
            Some(average(&within))
        })
        .collect();
    let columns: Vec<Option<&Column>> = columns.iter().map(Option::as_ref).collect();
    let raster = paint(&columns, request.width as usize, request.height as usize, pings);
    Ok(match request.format {
        Format::Png => png(&raster),
        Format::Svg => svg(&raster),
    })
}

/// The average of each value over `rows`, unknown values left out (unknown if all are).
fn average(rows: &[&Column]) -> Column {
    let mean = |values: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = values
            .filter(|v| v.is_finite())
            .fold((0.0, 0u32), |(sum, n), v| (sum + v, n + 1));
        if n == 0 {
            f64::NAN
        } else {
            sum / f64::from(n)
        }
    };
    let pings = rows.first().map_or(0, |r| r.pings.len());
    Column {
        pings: (0..pings).map(|i| mean(&mut rows.iter().map(|r| r.pings[i]))).collect(),
        median: mean(&mut rows.iter().map(|r| r.median)),
        loss: mean(&mut rows.iter().map(|r| r.loss)),
    }
}

/// Pixels, row by row from the top.
#[derive(Debug)]
struct Raster {
    width: usize,
    height: usize,
    pixels: Vec<Rgb>,
}

impl Raster {
    /// Fills column `x` from pixel row `top` to `bottom`, both included (clipped).
    fn fill(&mut self, x: usize, top: usize, bottom: usize, colour: Rgb) {
        for y in top..=bottom.min(self.height - 1) {
            self.pixels[y * self.width + x] = colour;
        }
    }
}

/// The smoke, then the median over it, on a white background.
fn paint(columns: &[Option<&Column>], width: usize, height: usize, pings: u32) -> Raster {
    let upper = columns
        .iter()
        .flatten()
        .map(|c| c.median)
        .filter(|m| m.is_finite())
        .fold(0.0f64, f64::max)
        * 1.5;
    let upper = if upper > 0.0 { upper } else { 1e-6 };
    // The pixel row of a value: 0 at the top edge (and above it: clipped), height at 0 s.
    let row = |v: f64| ((1.0 - v / upper).max(0.0) * height as f64).round() as usize;
    let mut raster = Raster {
        width,
        height,
        pixels: vec![WHITE; width * height],
    };
    let bands = smoke_bands(pings, false);
    for (x, column) in columns.iter().enumerate() {
        let Some(column) = column else { continue };
        for &(bottom, top) in &bands {
            let value = |i: u32| column.pings.get(i as usize - 1).copied().unwrap_or(f64::NAN);
            let (low, high) = (value(bottom), value(top));
            if low.is_finite() && high.is_finite() && high > low {
                let grey = smoke_grey(pings, bottom);
                let (top_row, bottom_row) = (row(high), row(low));
                if bottom_row > top_row {
                    raster.fill(x, top_row, bottom_row - 1, [grey; 3]);
                }
            }
        }
    }
    let colours = loss_colours(pings.max(1));
    let colour_of = |loss: f64| {
        let mut below = -1.0;
        for (lost, colour, _) in &colours {
            if loss > below && loss <= f64::from(*lost) {
                return Some([colour.red, colour.green, colour.blue]);
            }
            below = f64::from(*lost);
        }
        None
    };
    let mut previous: Option<usize> = None;
    for (x, column) in columns.iter().enumerate() {
        let point = column
            .filter(|c| c.median.is_finite())
            .and_then(|c| Some((row(c.median).min(height - 1), colour_of(c.loss)?)));
        let Some((y, colour)) = point else {
            previous = None;
            continue;
        };
        // Two pixels high, and joined to the previous column's median as a line is.
        let (mut top, mut bottom) = (y.saturating_sub(1), y);
        if let Some(p) = previous {
            top = top.min(p);
            bottom = bottom.max(p);
        }
        raster.fill(x, top, bottom, colour);
        previous = Some(y);
    }
    raster
}

/// The raster as a PNG: 8-bit RGB, no interlace, every row filtered "none", one IDAT.
fn png(raster: &Raster) -> Vec<u8> {
    let mut raw = Vec::with_capacity((raster.width * 3 + 1) * raster.height);
    for row in raster.pixels.chunks(raster.width) {
        raw.push(0);
        raw.extend(row.iter().flatten());
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&raw).expect("compressing into memory");
    let idat = zlib.finish().expect("compressing into memory");
    let mut header = Vec::with_capacity(13);
    header.extend((raster.width as u32).to_be_bytes());
    header.extend((raster.height as u32).to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &header[..]), (b"IDAT", &idat[..]), (b"IEND", &[][..])] {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        out.extend(crc32fast::hash(&out[start..]).to_be_bytes());
    }
    out
}

/// The raster as an SVG: a white background and one rectangle per vertical run of a colour.
fn svg(raster: &Raster) -> Vec<u8> {
    use std::fmt::Write as _;
    let (w, h) = (raster.width, raster.height);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>"
    );
    for x in 0..w {
        let mut y = 0;
        while y < h {
            let colour = raster.pixels[y * w + x];
            let run = (y..h).take_while(|&z| raster.pixels[z * w + x] == colour).count();
            if colour != WHITE {
                let [r, g, b] = colour;
                let _ = write!(
                    out,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"1\" height=\"{run}\" fill=\"#{r:02x}{g:02x}{b:02x}\"/>"
                );
            }
            y += run;
        }
    }
    out.push_str("</svg>\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(median: f64, loss: f64, pings: &[f64]) -> Column {
        Column {
            pings: pings.to_vec(),
            median,
            loss,
        }
    }

    #[test]
    fn the_median_is_drawn_in_its_loss_colour_at_its_height_over_the_smoke() {
        // 20 pings from 10 to 29 ms, median 20 ms: the axis runs to 30 ms.
        let pings: Vec<f64> = (0..20).map(|k| 0.010 + 0.001 * k as f64).collect();
        let clean = column(0.020, 0.0, &pings);
        let lossy = column(0.020, 1.0, &pings);
        let raster = paint(&[Some(&clean), None, Some(&lossy)], 3, 30, 20);
        let at = |x: usize, y: usize| raster.pixels[y * 3 + x];
        // 20 ms of 30 ms is pixel row 10: rows 9 and 10 green.
        assert_eq!(at(0, 10), [0x26, 0xff, 0x00]);
        assert_eq!(at(0, 9), [0x26, 0xff, 0x00]);
        assert_eq!(at(2, 10), [0x00, 0xb8, 0xff], "1 of 20 lost");
        // The smoke: all the pings (10..29 ms, rows 1..19) in the outer grey, the middle half
        // (ping6..ping15, 15..24 ms, rows 6..14) darker; white above and below.
        let outer = smoke_grey(20, 1);
        let inner = smoke_grey(20, 6);
        assert!(inner < outer);
        assert_eq!(at(0, 2), [outer; 3]);
        assert_eq!(at(0, 7), [inner; 3]);
        assert_eq!(at(0, 0), WHITE);
        assert_eq!(at(0, 25), WHITE);
        assert!((0..30).all(|y| at(1, y) == WHITE), "no data, nothing drawn");
    }

    #[test]
    fn values_above_the_axis_are_clipped_and_unknown_ones_draw_nothing() {
        // 4 pings: bands ping1..ping4 and ping2..ping3; the axis runs to 15 ms.
        let c = column(0.010, 0.0, &[0.005, 0.010, 0.010, 10.0]);
        let unknown = column(f64::NAN, f64::NAN, &[f64::NAN; 4]);
        let raster = paint(&[Some(&c), Some(&unknown)], 2, 20, 4);
        let at = |x: usize, y: usize| raster.pixels[y * 2 + x];
        let outer = [smoke_grey(4, 1); 3];
        assert_eq!(at(0, 0), outer, "10 s is clipped at the top edge");
        assert_eq!(at(0, 12), outer, "5 ms is pixel row 13, the band ends above it");
        assert_eq!(at(0, 13), WHITE);
        assert_eq!(at(0, 7), [0x26, 0xff, 0x00], "10 ms is row 7 (6.7 rounded)");
        assert!((0..20).all(|y| at(1, y) == WHITE), "unknown values draw nothing");
    }

    #[test]
    fn a_column_averages_its_rows_leaving_unknown_values_out() {
        let a = column(0.010, 0.0, &[0.008, f64::NAN]);
        let b = column(0.020, 3.0, &[0.012, f64::NAN]);
        let c = column(f64::NAN, f64::NAN, &[f64::NAN, f64::NAN]);
        let mean = average(&[&a, &b, &c]);
        assert!((mean.median - 0.015).abs() < 1e-12);
        assert!((mean.loss - 1.5).abs() < 1e-12);
        assert!((mean.pings[0] - 0.010).abs() < 1e-12);
        assert!(mean.pings[1].is_nan());
    }

    #[test]
    fn the_png_is_well_formed_with_its_size_and_checksums() {
        let c = column(0.02, 0.0, &[0.01, 0.02, 0.03]);
        let raster = paint(&[Some(&c); 10], 10, 8, 3);
        let image = png(&raster);
        assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let mut kinds = Vec::new();
        while at < image.len() {
            let len = u32::from_be_bytes(image[at..at + 4].try_into().unwrap()) as usize;
            let body = &image[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(image[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32fast::hash(body), crc);
            kinds.push(String::from_utf8_lossy(&body[..4]).to_string());
            if &body[..4] == b"IDAT" {
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&body[4..]), &mut raw).unwrap();
                assert_eq!(raw.len(), (10 * 3 + 1) * 8);
            }
            if &body[..4] == b"IHDR" {
                assert_eq!(&body[4..12], &[0, 0, 0, 10, 0, 0, 0, 8]);
            }
            at += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
        let text = String::from_utf8(svg(&raster)).unwrap();
        assert!(text.contains("fill=\"#26ff00\""));
        assert!(text.starts_with("<svg") && text.ends_with("</svg>\n"));
    }
}
