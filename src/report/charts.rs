//! The page's charts, each an SVG document drawn with plotters' SVG backend: a line chart with a
//! legend column (every line in it, each its own colour), the panels of small multiples (one
//! account per panel, on an axis shared by all panels), and the freshness bars.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ReportError, format_age, short_number};
use crate::domain::{DAY_SECS, HOUR_SECS};
use crate::store::Freshness;

/// Chart size in SVG pixels; the page scales charts down to its width.
pub(super) const CHART_SIZE: (u32, u32) = (960, 360);
/// Width of the legend column at the right of line charts.
const LEGEND_WIDTH: u32 = 300;
/// Height of one legend row.
const LEGEND_ROW: u32 = 20;
/// Tableau 10: distinct hues that stay apart for most colour-blind readers. A chart never
/// holds more series than this, so no colour repeats within one.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];
const FONT: &str = "sans-serif";
const GRID_LIGHT: RGBColor = RGBColor(242, 242, 242);
const GRID_BOLD: RGBColor = RGBColor(222, 222, 222);

/// One line of a line chart.
pub(super) struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub(super) struct LineChart<'a> {
    pub title: &'a str,
    pub x: std::ops::Range<f64>,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub x_label: &'a dyn Fn(f64) -> String,
    /// At most [`PALETTE`]'s length: each gets its own colour and legend row.
    pub lines: &'a [Line],
    /// Dots on the data points (for short series, where a single point would not show).
    pub markers: bool,
}

/// Draws a line chart as an SVG document; more lines than colours is refused.
pub(super) fn line_chart(c: &LineChart<'_>) -> Result<String, ReportError> {
    let failed = |message: String| ReportError::Chart {
        chart: c.title.to_string(),
        message,
    };
    if c.lines.len() > PALETTE.len() {
        return Err(failed(format!(
            "{} lines, but only {} distinct colours",
            c.lines.len(),
            PALETTE.len()
        )));
    }
    let mut svg = String::new();
    draw_lines(&mut svg, c).map_err(|e| failed(e.to_string()))?;
    Ok(svg)
}

fn draw_lines(svg: &mut String, c: &LineChart<'_>) -> Result<(), Box<dyn std::error::Error>> {
    // Tall enough for every legend row, below the title.
    let height = CHART_SIZE
        .1
        .max(60 + LEGEND_ROW * (c.lines.len() as u32 + 2));
    let root = SVGBackend::with_string(svg, (CHART_SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let titled = root.titled(c.title, (FONT, 22))?;
    // The legend gets its own column, so it never hides a line.
    let (plot, legend) = titled.split_horizontally(CHART_SIZE.0 - LEGEND_WIDTH);
    let y_max = y_top(c.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(c.x.clone(), 0.0..y_max)?;
    let x_label = |v: &f64| (c.x_label)(*v);
    let y_label = |v: &f64| short_number(*v);
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(GRID_LIGHT)
        .bold_line_style(GRID_BOLD)
        .label_style((FONT, 15))
        .draw()?;
    let mut entries = Vec::new();
    for (line, color) in c.lines.iter().zip(PALETTE) {
        chart.draw_series(
            LineSeries::new(line.points.iter().copied(), color.stroke_width(2))
                .point_size(if c.markers { 3 } else { 0 }),
        )?;
        entries.push((line.label.as_str(), color));
    }
    draw_legend(&legend, &entries)?;
    root.present()?;
    Ok(())
}

/// The top of a y axis showing `values`: 5% above the largest, at least 1.
pub(super) fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max).max(1.0) * 1.05
}

/// One row per entry, top down: a stroke of its colour and its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(&str, RGBColor)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let row = LEGEND_ROW as i32;
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, color)) in entries.iter().enumerate() {
        let y = row + row * i as i32;
        area.draw(&PathElement::new(
            vec![(4, y), (26, y)],
            color.stroke_width(3),
        ))?;
        area.draw(&Text::new(label.to_string(), (32, y), style.clone()))?;
    }
    Ok(())
}

/// What the panels of one set of small multiples share: the axes, the size and the colour.
pub(super) struct Multiples<'a> {
    pub x: std::ops::Range<f64>,
    /// The top of the y axis, the same in every panel so that panels compare at a glance.
    pub y_max: f64,
    pub x_label: &'a dyn Fn(f64) -> String,
    /// Panel size in SVG pixels.
    pub size: (u32, u32),
    /// The one series' colour.
    pub color: RGBColor,
    pub markers: bool,
}

/// One panel of small multiples: a single series under its title, as an SVG document.
pub(super) fn panel(
    m: &Multiples<'_>,
    title: &str,
    points: &[(f64, f64)],
) -> Result<String, ReportError> {
    let mut svg = String::new();
    draw_panel(&mut svg, m, title, points).map_err(|e| ReportError::Chart {
        chart: title.to_string(),
        message: e.to_string(),
    })?;
    Ok(svg)
}

fn draw_panel(
    svg: &mut String,
    m: &Multiples<'_>,
    title: &str,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, m.size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 16))
        .margin(6)
        .margin_right(14)
        .x_label_area_size(22)
        .y_label_area_size(44)
        .build_cartesian_2d(m.x.clone(), 0.0..m.y_max)?;
    let x_label = |v: &f64| (m.x_label)(*v);
    let y_label = |v: &f64| short_number(*v);
    chart
        .configure_mesh()
        .x_labels(4)
        .y_labels(4)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(WHITE)
        .bold_line_style(GRID_BOLD)
        .label_style((FONT, 12))
        .draw()?;
    // A light area under the line, closed along the x axis.
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let mut area = vec![(first.0, 0.0)];
        area.extend_from_slice(points);
        area.push((last.0, 0.0));
        chart.draw_series(std::iter::once(Polygon::new(
            area,
            m.color.mix(0.15).filled(),
        )))?;
    }
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        m.color.stroke_width(2),
    ))?;
    if m.markers {
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 2, m.color.filled())))?;
    }
    root.present()?;
    Ok(())
}

/// Horizontal bars: the age of each kind's last successful run, labelled with it.
pub(super) fn freshness_chart(
    title: &str,
    rows: &[Freshness],
    now: i64,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    draw_freshness(&mut svg, title, rows, now).map_err(|e| ReportError::Chart {
        chart: title.to_string(),
        message: e.to_string(),
    })?;
    Ok(svg)
}

fn draw_freshness(
    svg: &mut String,
    title: &str,
    rows: &[Freshness],
    now: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let ages: Vec<Option<i64>> = rows
        .iter()
        .map(|f| f.last_ok.map(|t| (now - t).max(0)))
        .collect();
    let oldest = ages.iter().flatten().copied().max().unwrap_or(0);
    // One unit for the whole axis, chosen by the oldest age.
    let (unit, unit_name) = if oldest < 2 * HOUR_SECS {
        (60.0, "minutes")
    } else if oldest < 3 * DAY_SECS {
        (HOUR_SECS as f64, "hours")
    } else {
        (DAY_SECS as f64, "days")
    };
    // Room on the right for the labels at the end of the bars.
    let x_max = (oldest as f64 / unit).max(1.0) * 1.45;
    let n = rows.len() as f64;
    let root = SVGBackend::with_string(svg, (CHART_SIZE.0, 80 + 46 * rows.len() as u32))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..x_max, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc(unit_name)
        .x_labels(8)
        .light_line_style(GRID_LIGHT)
        .bold_line_style(GRID_BOLD)
        .label_style((FONT, 15))
        .draw()?;
    let label_style =
        TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, ((f, age), color)) in rows
        .iter()
        .zip(&ages)
        .zip(PALETTE.iter().cycle())
        .enumerate()
    {
        // First kind on top.
        let y = n - i as f64 - 0.5;
        let (end, label) = match age {
            Some(age) => {
                let end = *age as f64 / unit;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y - 0.3), (end, y + 0.3)],
                    color.filled(),
                )))?;
                (end, format!("{}: {}", f.kind, format_age(*age)))
            }
            None => (0.0, format!("{}: never succeeded", f.kind)),
        };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (end + x_max * 0.01, y),
            label_style.clone(),
        )))?;
    }
    root.present()?;
    Ok(())
}
