//! Charts drawn with plotters, as SVG (inline in the HTML, and files) and PNG.
//!
//! A [`Chart`] is one or more panels side by side under one title; each panel has lines
//! (one per [`Series`]) with round markers for the points that measured (hollow for those
//! whose verdict is not `valid`), crosses for points that failed or whose engine crashed,
//! and an optional p50–p99 band. The batch
//! size axis is log2. Text is drawn with DejaVu Sans embedded in the binary (registered
//! for plotters' `ab_glyph` font backend), so nothing depends on system fonts.
//!
//! In the SVG, each series' line carries `class="series"`, `data-panel` and `data-series`
//! attributes, so tools (and the tests) can find the series of a plot; each hollow marker
//! carries `class="invalid"`, its verdict in `data-verdict` and a `<title>` (the tooltip).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::ReportError;

/// DejaVu Sans (Bitstream Vera license, `controller/report/assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Width and height of one panel, in pixels.
const PANEL: (u32, u32) = (620, 440);
const TITLE_HEIGHT: u32 = 44;
const SERIES_STROKE: u32 = 2;

/// Line colours, in series order (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// What a panel's x axis shows.
#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    /// Batch size (burst) or requests in flight (concurrency), log2.
    BatchLog2,
    /// Any other quantity, linear from 0, with its label (unit included).
    Linear(String),
}

/// One line of a panel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub label: String,
    /// Points that measured, in x order.
    pub points: Vec<(f64, f64)>,
    /// Points that failed or whose engine crashed (y = what they measured, or 0).
    pub failed: Vec<(f64, f64)>,
    /// Points of `points` whose verdict is not `valid`, with that verdict: drawn hollow.
    pub invalid: Vec<(f64, f64, String)>,
    /// (x, low, high): a band drawn under the line (p50–p99).
    pub band: Vec<(f64, f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x: XAxis,
    /// The y axis label, unit included.
    pub y_label: String,
    pub series: Vec<Series>,
    /// Legend in the upper left corner (rising curves) instead of the upper right.
    pub legend_left: bool,
}

/// A figure: panels side by side under one title.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// File stem of its SVG and PNG, unique in a report.
    pub id: String,
    pub title: String,
    pub panels: Vec<Panel>,
}

impl Chart {
    pub fn size(&self) -> (u32, u32) {
        let n = u32::try_from(self.panels.len().max(1)).unwrap_or(1);
        // A single panel gets room for a long title.
        ((PANEL.0 * n).max(900), PANEL.1 + TITLE_HEIGHT)
    }
}

fn plot_error(e: impl std::fmt::Display) -> ReportError {
    ReportError::Draw(format!("plot: {e}"))
}

/// Registers the embedded font with plotters (once per process).
fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Draw(
            "the embedded DejaVu Sans font does not load".into(),
        ))
    }
}

/// The chart as an SVG document (no XML declaration, so it can be inlined in HTML).
pub fn render_svg(chart: &Chart) -> Result<String, ReportError> {
    ensure_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size()).into_drawing_area();
        draw(&root, chart).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(tag_invalid(&tag_series(&svg, chart), chart))
}

/// The chart as a PNG file.
pub fn render_png(chart: &Chart, path: &Path) -> Result<(), ReportError> {
    ensure_font()?;
    let root = BitMapBackend::new(path, chart.size()).into_drawing_area();
    draw(&root, chart).map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Marks the line of every series (the polylines of [`SERIES_STROKE`] width, drawn in
/// panel and series order) with `class="series" data-panel=… data-series=…`.
fn tag_series(svg: &str, chart: &Chart) -> String {
    let mut labels = chart.panels.iter().enumerate().flat_map(|(i, panel)| {
        panel
            .series
            .iter()
            .filter(|s| !s.points.is_empty())
            .map(move |s| (i, s.label.as_str()))
    });
    let width = format!("stroke-width=\"{SERIES_STROKE}\"");
    let mut out = String::with_capacity(svg.len() + 1024);
    for line in svg.split_inclusive('\n') {
        if line.starts_with("<polyline ") && line.contains(&width) {
            if let Some((panel, label)) = labels.next() {
                out.push_str("<polyline class=\"series\" data-panel=\"");
                out.push_str(&panel.to_string());
                out.push_str("\" data-series=\"");
                out.push_str(&crate::markup::escape(label));
                out.push_str("\" ");
                out.push_str(&line["<polyline ".len()..]);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Radius of a hollow (not `valid`) marker; the legend's sample is smaller, so only the
/// points' markers have this radius.
const HOLLOW_RADIUS: u32 = 5;

/// Gives every hollow marker (drawn in panel, series and point order) `class="invalid"`,
/// `data-verdict` and a `<title>` with its verdict, which browsers show on hover.
fn tag_invalid(svg: &str, chart: &Chart) -> String {
    let mut verdicts = chart.panels.iter().flat_map(|p| &p.series).flat_map(|s| {
        s.invalid
            .iter()
            .map(move |(_, _, v)| (s.label.as_str(), v.as_str()))
    });
    let marker = format!("r=\"{HOLLOW_RADIUS}\"");
    let mut out = String::with_capacity(svg.len() + 1024);
    for line in svg.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed.starts_with("<circle ")
            && trimmed.contains(&marker)
            && trimmed.contains("fill=\"none\"")
            && let Some(body) = trimmed.strip_suffix("/>")
            && let Some((label, verdict)) = verdicts.next()
        {
            let verdict = crate::markup::escape(verdict);
            out.push_str("<circle class=\"invalid\" data-verdict=\"");
            out.push_str(&verdict);
            out.push_str("\" ");
            out.push_str(&body["<circle ".len()..]);
            out.push_str("><title>");
            out.push_str(&crate::markup::escape(label));
            out.push_str(": not valid: ");
            out.push_str(&verdict);
            out.push_str("</title></circle>");
            out.push_str(&line[trimmed.len()..]);
            continue;
        }
        out.push_str(line);
    }
    out
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(&chart.title, (FAMILY, 19).into_font().color(&BLACK))?;
    let areas = body.split_evenly((1, chart.panels.len().max(1)));
    for (panel, area) in chart.panels.iter().zip(areas.iter()) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

/// The x and y ranges of a panel: every point, failed point and band edge fits.
fn ranges(panel: &Panel) -> ((f64, f64), f64) {
    let xs = panel.series.iter().flat_map(|s| {
        s.points
            .iter()
            .chain(&s.failed)
            .map(|p| p.0)
            .chain(s.band.iter().map(|b| b.0))
    });
    let ys = panel.series.iter().flat_map(|s| {
        s.points
            .iter()
            .chain(&s.failed)
            .map(|p| p.1)
            .chain(s.band.iter().map(|b| b.2))
    });
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in xs.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    let y_max = ys.filter(|y| y.is_finite()).fold(0.0_f64, f64::max);
    if !lo.is_finite() {
        (lo, hi) = (1.0, 2.0);
    }
    let y_max = if y_max > 0.0 { y_max * 1.12 } else { 1.0 };
    ((lo, hi), y_max)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult<DB> {
    let ((x_lo, x_hi), y_max) = ranges(panel);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, (FAMILY, 16))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70);
    match &panel.x {
        XAxis::BatchLog2 => {
            let lo = (x_lo.max(1.0) / 1.4).max(0.5);
            let hi = x_hi.max(x_lo * 2.0) * 1.4;
            let mut chart =
                builder.build_cartesian_2d((lo..hi).log_scale().base(2.0), -y_max * 0.04..y_max)?;
            chart
                .configure_mesh()
                .x_desc("batch size (requests sent together / in flight), log2")
                .y_desc(&panel.y_label)
                .axis_desc_style((FAMILY, 14))
                .label_style((FAMILY, 12))
                .light_line_style(RGBColor(238, 238, 238))
                .max_light_lines(1)
                .x_label_formatter(&|x: &f64| {
                    let r = x.round();
                    if (x - r).abs() < 1e-6 && r >= 1.0 && (r as u64).is_power_of_two() {
                        format!("{r:.0}")
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&y_tick)
                .draw()?;
            draw_series(&mut chart, panel)?;
        }
        XAxis::Linear(label) => {
            // From just below the smallest value: these curves (throughput vs TPOT) live
            // far from 0.
            let span = (x_hi - x_lo).max(x_hi.abs() * 0.05).max(1e-9);
            let lo = (x_lo - span * 0.08).max(0.0);
            let hi = x_hi + span * 0.08;
            let mut chart = builder.build_cartesian_2d(lo..hi, -y_max * 0.04..y_max)?;
            chart
                .configure_mesh()
                .x_desc(label)
                .y_desc(&panel.y_label)
                .axis_desc_style((FAMILY, 14))
                .label_style((FAMILY, 12))
                .light_line_style(RGBColor(238, 238, 238))
                .max_light_lines(1)
                .x_label_formatter(&|x: &f64| format_number(*x))
                .y_label_formatter(&y_tick)
                .draw()?;
            draw_series(&mut chart, panel)?;
        }
    }
    Ok(())
}

fn draw_series<'a, DB, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    panel: &Panel,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
{
    // Bands first, so lines and markers stay on top.
    for (i, s) in panel.series.iter().enumerate() {
        if s.band.len() >= 2 {
            let color = PALETTE[i % PALETTE.len()];
            let mut outline: Vec<(f64, f64)> = s.band.iter().map(|b| (b.0, b.2)).collect();
            outline.extend(s.band.iter().rev().map(|b| (b.0, b.1)));
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.15).filled(),
            )))?;
        }
    }
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if !s.points.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(SERIES_STROKE),
                ))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled())
                });
            let valid = s
                .points
                .iter()
                .filter(|p| !s.invalid.iter().any(|q| same_spot(**p, (q.0, q.1))));
            chart.draw_series(valid.map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    // Points whose verdict is not `valid`: hollow rings (white inside) on their line, one
    // legend entry for all.
    let mut invalid_labelled = false;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if s.invalid.is_empty() {
            continue;
        }
        chart.draw_series(
            s.invalid
                .iter()
                .map(|&(x, y, _)| Circle::new((x, y), HOLLOW_RADIUS - 1, WHITE.filled())),
        )?;
        let anno = chart.draw_series(
            s.invalid
                .iter()
                .map(|&(x, y, _)| Circle::new((x, y), HOLLOW_RADIUS, color.stroke_width(2))),
        )?;
        if !invalid_labelled {
            invalid_labelled = true;
            anno.label("hollow: verdict not valid (hover for why)")
                .legend(|(x, y)| Circle::new((x + 8, y), 4, BLACK.stroke_width(2)));
        }
    }
    // Failed points last, on top, with one legend entry after the lines'. Crosses of
    // several series at the same spot (e.g. two workloads that crashed at one batch size,
    // both at 0) are stacked upwards so that each stays visible.
    let mut failed_labelled = false;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if !s.failed.is_empty() {
            let anno = chart.draw_series(s.failed.iter().map(|&p| {
                let below = panel.series[..i]
                    .iter()
                    .flat_map(|earlier| &earlier.failed)
                    .filter(|q| same_spot(**q, p))
                    .count();
                let dy = -(CROSS_STACK_PX * i32::try_from(below).unwrap_or(0));
                EmptyElement::at(p) + Cross::new((0, dy), 6, color.stroke_width(2))
            }))?;
            if !failed_labelled {
                failed_labelled = true;
                anno.label("failed / engine crashed")
                    .legend(|(x, y)| Cross::new((x + 8, y), 5, BLACK.stroke_width(2)));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(if panel.legend_left {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// Pixels between crosses stacked at one spot.
const CROSS_STACK_PX: i32 = 13;

/// Two failed points drawn at the same place (same x, same y up to rounding).
fn same_spot(a: (f64, f64), b: (f64, f64)) -> bool {
    let close = |u: f64, v: f64| (u - v).abs() <= 1e-9 * u.abs().max(v.abs()).max(1.0);
    close(a.0, b.0) && close(a.1, b.1)
}

/// Y tick labels: nothing below 0 (the axis starts a little below 0 so that markers at 0
/// stay visible).
fn y_tick(y: &f64) -> String {
    if *y < -1e-12 {
        String::new()
    } else {
        format_number(*y)
    }
}

/// Tick labels: 1234 → "1234", 12.5 → "12.5", 80 → "80", 0.25 → "0.25", 25000 → "25k".
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    let text = if a >= 10_000.0 {
        return format!("{:.0}k", v / 1000.0);
    } else if a >= 100.0 || a == 0.0 {
        return format!("{v:.0}");
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        let series = |label: &str, k: f64| Series {
            label: label.into(),
            points: vec![(1.0, k), (2.0, 2.0 * k), (4.0, 3.5 * k)],
            failed: vec![(8.0, 0.0)],
            band: vec![
                (1.0, k, 1.5 * k),
                (2.0, 2.0 * k, 2.5 * k),
                (4.0, 3.0 * k, 4.0 * k),
            ],
            invalid: Vec::new(),
        };
        Chart {
            id: "t".into(),
            title: "model <x> & 1 GPU".into(),
            panels: vec![
                Panel {
                    title: "a".into(),
                    x: XAxis::BatchLog2,
                    y_label: "tokens/s".into(),
                    series: vec![series("128/32 tok", 10.0), series("512/64 tok", 5.0)],
                    legend_left: true,
                },
                Panel {
                    title: "b".into(),
                    x: XAxis::Linear("TPOT p50 (ms)".into()),
                    y_label: "tokens/s".into(),
                    series: vec![series("1 GPU", 3.0)],
                    legend_left: false,
                },
            ],
        }
    }

    #[test]
    fn svg_tags_one_line_per_series_and_escapes_text() {
        let svg = render_svg(&chart()).unwrap();
        assert_eq!(svg.matches("class=\"series\"").count(), 3, "{svg}");
        assert_eq!(svg.matches("data-panel=\"0\"").count(), 2);
        assert!(svg.contains("data-series=\"512/64 tok\""));
        assert!(svg.contains("model &lt;x&gt; &amp; 1 GPU"));
        assert!(svg.contains("failed / engine crashed"));
    }

    #[test]
    fn points_not_valid_are_hollow_with_their_verdict_as_tooltip() {
        let mut c = chart();
        c.panels[0].series[1].invalid =
            vec![(4.0, 17.5, "send lag p99 13.6 ms > 10 ms <&>".into())];
        c.panels[1].series[0].invalid = vec![
            (1.0, 3.0, "client CPU-saturated".into()),
            (2.0, 6.0, "engine saw at most 9".into()),
        ];
        let svg = render_svg(&c).unwrap();
        assert_eq!(svg.matches("class=\"invalid\"").count(), 3, "{svg}");
        assert!(
            svg.contains("<title>512/64 tok: not valid: send lag p99 13.6 ms &gt; 10 ms &lt;&amp;&gt;</title></circle>"),
            "{svg}"
        );
        assert!(
            svg.contains("data-verdict=\"client CPU-saturated\""),
            "{svg}"
        );
        assert!(
            svg.contains("<title>1 GPU: not valid: engine saw at most 9</title>"),
            "{svg}"
        );
        assert!(svg.contains("hollow: verdict not valid"), "{svg}");
        // A chart with only valid points has neither hollow markers nor their legend.
        let svg = render_svg(&chart()).unwrap();
        assert!(!svg.contains("class=\"invalid\""));
        assert!(!svg.contains("hollow:"));
    }

    #[test]
    fn png_renders_with_the_embedded_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        render_png(&chart(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
    }

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(format_number(25_000.0), "25k");
        assert_eq!(format_number(1234.0), "1234");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(80.0), "80");
        assert_eq!(format_number(2.5), "2.5");
    }
}
