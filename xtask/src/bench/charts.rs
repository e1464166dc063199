//! The charts of `cargo xtask bench`, drawn with `plotters` (SVG backend): axes, log scales and
//! ticks come from the library; the legends are drawn in a strip of their own above each plot
//! so that no series label can be cut by the plot area.
//!
//! Only measured figures are drawn: a path with no Linux figure shows cowlab alone (and says
//! so), and the fork chart joins measured points, never a model of them.
//!
//! - `paths.svg`: every path with a target or a Linux figure, cowlab and Linux side by side on
//!   a log axis, the target as a red tick.
//! - `fork.svg`: fork cost against touched memory, both axes logarithmic and labelled in MiB.
//! - `vmas.svg`: the anonymous write fault against the number of VMAs.
//! - `eras.svg` (`--eras`): the same paths under each of cowlab's eras, relative to the newest.
//! - `smp.svg` (`--smp`): instructions per fault (all CPUs') against the faulting threads, on
//!   disjoint ranges and on one shared range, both kernels.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Row;
use super::results::Run;

const COWLAB: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const LINUX: RGBColor = RGBColor(0x88, 0x88, 0x88);
const TARGET: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const HOST: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// One colour per era, oldest first.
const ERA_COLORS: [RGBColor; 5] = [
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x17, 0xbe, 0xcf),
    COWLAB,
];
const FONT: &str = "sans-serif";

pub const FORK_MIB: [u64; 5] = [1, 4, 16, 64, 256];
pub const VMAS: [u64; 4] = [1, 10, 100, 1000];
pub const SMP_THREADS: [u64; 3] = [1, 2, 4];
/// The shared-range series: lighter cowlab, darker Linux.
const COWLAB_SHARED: RGBColor = RGBColor(0x6b, 0xae, 0xd6);
const LINUX_SHARED: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// Writes every chart into `out`; returns the file names.
pub fn write_all(
    out: &Path,
    rows: &[Row],
    linux_label: &str,
    eras: Option<&[(u32, Run)]>,
) -> Result<Vec<String>> {
    let mut charts = vec![
        ("paths.svg", paths_chart(rows, linux_label)?),
        ("fork.svg", fork_chart(rows, linux_label)?),
        ("vmas.svg", vma_chart(rows, linux_label)?),
    ];
    if let Some(eras) = eras {
        charts.push(("eras.svg", era_chart(rows, eras)?));
    }
    if rows
        .iter()
        .any(|r| r.name.starts_with("smp_fault_") && r.cowlab.is_some())
    {
        charts.push(("smp.svg", smp_chart(rows, linux_label)?));
    }
    let mut names = Vec::new();
    for (name, svg) in charts {
        let path = out.join(name);
        std::fs::write(&path, svg).map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
        names.push(name.to_owned());
    }
    Ok(names)
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// 1234567 -> "1.23M", 12345 -> "12.3k".
pub fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One series of a chart: a legend entry and one value per category or x position.
struct Series {
    label: String,
    color: RGBColor,
    values: Vec<Option<f64>>,
}

/// The title and legend strip: the title on the first line, then one coloured square and label
/// per entry, laid out left to right with room for each label's full length.
fn header<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    subtitle: &str,
    legend: &[(String, RGBColor, Mark)],
) -> Result<()> {
    let title_style = (FONT, 21).into_font().style(FontStyle::Bold);
    area.draw(&Text::new(title.to_owned(), (12, 8), title_style))
        .map_err(draw_err)?;
    area.draw(&Text::new(subtitle.to_owned(), (12, 32), (FONT, 15)))
        .map_err(draw_err)?;
    let width = area.dim_in_pixel().0 as i32;
    for ((label, color, mark), (x, y)) in legend.iter().zip(legend_places(legend, width)) {
        match mark {
            Mark::Tick => area
                .draw(&Rectangle::new(
                    [(x + 5, y - 1), (x + 8, y + 13)],
                    color.filled(),
                ))
                .map_err(draw_err)?,
            Mark::Square => area
                .draw(&Rectangle::new(
                    [(x, y + 1), (x + 12, y + 13)],
                    color.filled(),
                ))
                .map_err(draw_err)?,
            Mark::Dashed => {
                for dx in [0, 8] {
                    area.draw(&Rectangle::new(
                        [(x + dx, y + 6), (x + dx + 5, y + 8)],
                        color.filled(),
                    ))
                    .map_err(draw_err)?;
                }
            }
        }
        area.draw(&Text::new(label.clone(), (x + 18, y), (FONT, 16)))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Where each legend entry starts (its mark's left edge, its text's top): left to right from
/// x = 12 on the line at y = 51, and on the next line (y + [`LEGEND_LINE`]) when an entry
/// would pass the right edge (`width`), so none is cut (smp.svg's fourth entry was).
fn legend_places(legend: &[(String, RGBColor, Mark)], width: i32) -> Vec<(i32, i32)> {
    let (mut x, mut y) = (12, 51);
    let mut out = Vec::new();
    for (label, _, _) in legend {
        // A generous 8 px per character: the SVG viewer's font decides the real width.
        let w = 18 + 8 * label.chars().count() as i32;
        if x > 12 && x + w > width - 12 {
            x = 12;
            y += LEGEND_LINE;
        }
        out.push((x, y));
        x += w + 24;
    }
    out
}

/// The height of a legend line.
const LEGEND_LINE: i32 = 22;

/// The header: title, subtitle and two legend lines.
const HEADER_H: u32 = 74 + LEGEND_LINE as u32;

/// How a legend entry is marked: a bar or line colour, a target tick, a dashed reference line.
#[derive(Clone, Copy)]
enum Mark {
    Square,
    Tick,
    Dashed,
}

/// Horizontal grouped bars on a log axis: one group per category (top to bottom), one bar per
/// series with a value, the value printed at the bar's end, `ticks` (targets) as red marks, and
/// `note`s for categories where a series has no figure.
fn hbar_chart(
    title: &str,
    subtitle: &str,
    categories: &[String],
    series: &[Series],
    ticks: &[Option<f64>],
    tick_label: &str,
) -> Result<String> {
    let groups = categories.len().max(1);
    let bar_h = 14u32;
    let group_h = bar_h * series.len().max(1) as u32 + 12;
    let width = 1000u32;
    let height = HEADER_H + 30 + group_h * groups as u32 + 60;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .chain(ticks.iter().flatten())
        .fold(10.0f64, |a, &b| a.max(b));
    let x_max = 10f64.powf((max * 1.5).log10().ceil());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, body) = root.split_vertically(HEADER_H);
        let mut legend: Vec<(String, RGBColor, Mark)> = series
            .iter()
            .map(|s| (s.label.clone(), s.color, Mark::Square))
            .collect();
        if ticks.iter().any(Option::is_some) {
            legend.push((tick_label.to_owned(), TARGET, Mark::Tick));
        }
        header(&top, title, subtitle, &legend)?;
        let mut chart = ChartBuilder::on(&body)
            .margin_right(70)
            .margin_top(10)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..groups as f64)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("guest instructions (log scale)")
            .x_label_formatter(&|v| human(*v))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(draw_err)?;
        let slot = 1.0 / (series.len() as f64 + 0.8);
        for (g, name) in categories.iter().enumerate() {
            // Group g occupies [groups - g - 1, groups - g) so the first is on top.
            let top_y = (groups - g) as f64 - 0.4 * slot;
            let (px, py) = chart.backend_coord(&(1.0, top_y - slot * series.len() as f64 / 2.0));
            root.draw(&Text::new(
                name.clone(),
                (px - 8, py),
                TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(draw_err)?;
            for (k, s) in series.iter().enumerate() {
                let y1 = top_y - slot * k as f64;
                let y0 = y1 - slot * 0.85;
                match s.values.get(g).copied().flatten() {
                    Some(v) => {
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(1.0, y0), (v.max(1.0), y1)],
                                s.color.filled(),
                            )))
                            .map_err(draw_err)?;
                        // A target tick just past (or on) the bar's end would cover the
                        // figure: the figure then starts after the tick.
                        let at = label_x(v, ticks.get(g).copied().flatten());
                        let (tx, ty) = chart.backend_coord(&(at.max(1.0), (y0 + y1) / 2.0));
                        root.draw(&Text::new(
                            human(v),
                            (tx + if at > v { 6 } else { 4 }, ty),
                            TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Left, VPos::Center)),
                        ))
                        .map_err(draw_err)?;
                    }
                    None => {
                        let (tx, ty) = chart.backend_coord(&(1.0, (y0 + y1) / 2.0));
                        root.draw(&Text::new(
                            format!("no {} figure", s.label),
                            (tx + 4, ty),
                            TextStyle::from((FONT, 13))
                                .color(&s.color)
                                .pos(Pos::new(HPos::Left, VPos::Center)),
                        ))
                        .map_err(draw_err)?;
                    }
                }
            }
            if let Some(t) = ticks.get(g).copied().flatten() {
                let y0 = top_y - slot * series.len() as f64;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(t, y0 - 0.05), (t, top_y + 0.05)],
                        TARGET.stroke_width(3),
                    )))
                    .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Where a bar's figure is written: at the bar's end `v`, or at the target tick `t` when the
/// tick lies where the text would be (from a little inside the bar to 2x past its end on the
/// log axis, about the width of a 4-digit figure).
fn label_x(v: f64, t: Option<f64>) -> f64 {
    match t {
        Some(t) if t >= v * 0.95 && t <= v * 2.0 => t,
        _ => v,
    }
}

fn row<'r>(rows: &'r [Row], name: &str) -> Option<&'r Row> {
    rows.iter().find(|r| r.name == name)
}

fn cowlab_of(rows: &[Row], name: &str) -> Option<f64> {
    row(rows, name)?.cowlab.as_ref().map(|m| m.median as f64)
}

fn linux_of(rows: &[Row], name: &str) -> Option<f64> {
    row(rows, name)?.linux.map(|v| v as f64)
}

fn host_of(rows: &[Row], name: &str) -> Option<f64> {
    row(rows, name)?.host.as_ref().map(|m| m.median as f64)
}

/// The rows of the paths chart: every path with a target or a Linux figure, except the series
/// of the fork and VMA charts and the timer and copy references.
fn path_rows(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.target.is_some() || r.linux.is_some())
        .filter(|r| {
            !r.name.starts_with("fork_touched_mib_")
                && !r.name.starts_with("fault_vmas_")
                && !r.name.starts_with("smp_fault_")
        })
        .filter(|r| r.name != "tsc_overhead")
        .filter(|r| r.cowlab.is_some() || r.linux.is_some())
        .collect()
}

/// cowlab and Linux per path, with the target.
pub fn paths_chart(rows: &[Row], linux_label: &str) -> Result<String> {
    let chosen = path_rows(rows);
    let categories: Vec<String> = chosen.iter().map(|r| r.name.clone()).collect();
    let series = vec![
        Series {
            label: "cowlab".into(),
            color: COWLAB,
            values: chosen
                .iter()
                .map(|r| r.cowlab.as_ref().map(|m| m.median as f64))
                .collect(),
        },
        Series {
            label: linux_label.to_owned(),
            color: LINUX,
            values: chosen.iter().map(|r| r.linux.map(|v| v as f64)).collect(),
        },
    ];
    let ticks: Vec<Option<f64>> = chosen.iter().map(|r| r.target.map(|t| t as f64)).collect();
    hbar_chart(
        "cowlab and Linux per path",
        "guest instructions under QEMU -icount (median; per page, MiB or call as the row's unit)",
        &categories,
        &series,
        &ticks,
        "target (at most)",
    )
}

/// A line chart over log x positions with measured points only.
#[allow(clippy::too_many_arguments)]
fn line_chart(
    title: &str,
    subtitle: &str,
    x_desc: &str,
    y_desc: &str,
    xs: &[u64],
    series: &[Series],
    y_log: bool,
    flat: &[(String, RGBColor, f64)],
) -> Result<String> {
    let (width, height) = (900u32, 560u32);
    let x_range = (xs[0] as f64 / 1.5)..(xs[xs.len() - 1] as f64 * 1.5);
    let values = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(flat.iter().map(|f| f.2));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 { (1.0, 10.0) } else { (lo, hi) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, body) = root.split_vertically(HEADER_H);
        let mut legend: Vec<(String, RGBColor, Mark)> = series
            .iter()
            .map(|s| (s.label.clone(), s.color, Mark::Square))
            .collect();
        legend.extend(flat.iter().map(|(l, c, _)| (l.clone(), *c, Mark::Dashed)));
        header(&top, title, subtitle, &legend)?;
        let key_points: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let x_axis = x_range.log_scale().with_key_points(key_points);
        let mut builder = ChartBuilder::on(&body);
        builder
            .margin_right(30)
            .margin_top(10)
            .x_label_area_size(45)
            .y_label_area_size(80);
        // The two y axes differ in type, so each draws its own chart.
        if y_log {
            let y = ((lo / 2.0).max(1.0)..hi * 2.0).log_scale();
            let mut chart = builder.build_cartesian_2d(x_axis, y).map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| human(*v))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(draw_err)?;
            plot_lines(&mut chart, xs, series, flat)?;
        } else {
            let mut chart = builder
                .build_cartesian_2d(x_axis, 0f64..hi * 1.25)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| human(*v))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(draw_err)?;
            plot_lines(&mut chart, xs, series, flat)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn plot_lines<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    xs: &[u64],
    series: &[Series],
    flat: &[(String, RGBColor, f64)],
) -> Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    // The second half's figures go below their points: a series and its counterpart (smp.svg's
    // disjoint and shared ranges of one kernel) can coincide, and their figures overprinted.
    let below = series.len() / 2;
    for (i, s) in series.iter().enumerate() {
        let v_pos = if i >= below && below > 0 {
            VPos::Top
        } else {
            VPos::Bottom
        };
        let points: Vec<(f64, f64)> = xs
            .iter()
            .zip(&s.values)
            .filter_map(|(&x, v)| v.map(|v| (x as f64, v)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), s.color.stroke_width(2)))
            .map_err(draw_err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, s.color.filled())))
            .map_err(draw_err)?;
        chart
            .draw_series(points.iter().map(|&(x, y)| {
                Text::new(
                    human(y),
                    (x, y),
                    TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Left, v_pos)),
                )
            }))
            .map_err(draw_err)?;
    }
    let (x0, x1) = (xs[0] as f64, xs[xs.len() - 1] as f64);
    for (_, color, y) in flat {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, *y), (x1, *y)],
                6,
                4,
                color.stroke_width(2),
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Fork cost against touched MiB, both axes logarithmic; the bare fork of each kernel as a
/// dashed line.
pub fn fork_chart(rows: &[Row], linux_label: &str) -> Result<String> {
    let names: Vec<String> = FORK_MIB
        .iter()
        .map(|m| format!("fork_touched_mib_{m}"))
        .collect();
    let mut series = vec![Series {
        label: "cowlab".into(),
        color: COWLAB,
        values: names.iter().map(|n| cowlab_of(rows, n)).collect(),
    }];
    let linux: Vec<Option<f64>> = names.iter().map(|n| linux_of(rows, n)).collect();
    if linux.iter().any(Option::is_some) {
        series.push(Series {
            label: linux_label.to_owned(),
            color: LINUX,
            values: linux,
        });
    }
    let host: Vec<Option<f64>> = names.iter().map(|n| host_of(rows, n)).collect();
    if host.iter().any(Option::is_some) {
        series.push(Series {
            label: "host (TSC cycles)".into(),
            color: HOST,
            values: host,
        });
    }
    let mut flat = Vec::new();
    if let Some(v) = cowlab_of(rows, "fork_base") {
        flat.push(("cowlab bare fork".to_owned(), COWLAB, v));
    }
    if let Some(v) = linux_of(rows, "fork_base") {
        flat.push((format!("{linux_label} bare fork"), LINUX, v));
    }
    line_chart(
        "fork cost against touched memory",
        "the parent's fork call with 1-256 MiB written before it (median of 5); measured points only",
        "MiB written before fork (log scale)",
        "guest instructions per fork (log scale)",
        &FORK_MIB,
        &series,
        true,
        &flat,
    )
}

/// The anonymous write fault against the number of extra VMAs.
pub fn vma_chart(rows: &[Row], linux_label: &str) -> Result<String> {
    let names: Vec<String> = VMAS.iter().map(|v| format!("fault_vmas_{v}")).collect();
    let mut series = vec![Series {
        label: "cowlab".into(),
        color: COWLAB,
        values: names.iter().map(|n| cowlab_of(rows, n)).collect(),
    }];
    let linux: Vec<Option<f64>> = names.iter().map(|n| linux_of(rows, n)).collect();
    if linux.iter().any(Option::is_some) {
        series.push(Series {
            label: linux_label.to_owned(),
            color: LINUX,
            values: linux,
        });
    }
    let host: Vec<Option<f64>> = names.iter().map(|n| host_of(rows, n)).collect();
    if host.iter().any(Option::is_some) {
        series.push(Series {
            label: "host (TSC cycles)".into(),
            color: HOST,
            values: host,
        });
    }
    line_chart(
        "anonymous write fault against VMA count",
        "median per fault with 1-1000 extra VMAs in the address space; measured points only",
        "VMAs added (log scale)",
        "guest instructions per fault",
        &VMAS,
        &series,
        false,
        &[],
    )
}

/// Fault work against the faulting threads (1, 2, 4) in the 4-CPU boot: guest instructions of
/// all CPUs per fault, each thread on its own range and all on one shared range; a kernel's
/// series appears only where it has measured points.
pub fn smp_chart(rows: &[Row], linux_label: &str) -> Result<String> {
    let mut series = Vec::new();
    for (kind, label) in [
        ("disjoint", "disjoint ranges"),
        ("shared", "one shared range"),
    ] {
        let names: Vec<String> = SMP_THREADS
            .iter()
            .map(|n| format!("smp_fault_{kind}_{n}"))
            .collect();
        let shared = kind == "shared";
        for (kernel, color, values) in [
            (
                "cowlab",
                if shared { COWLAB_SHARED } else { COWLAB },
                names.iter().map(|n| cowlab_of(rows, n)).collect::<Vec<_>>(),
            ),
            (
                linux_label,
                if shared { LINUX_SHARED } else { LINUX },
                names.iter().map(|n| linux_of(rows, n)).collect(),
            ),
        ] {
            if values.iter().any(Option::is_some) {
                series.push(Series {
                    label: format!("{kernel}, {label}"),
                    color,
                    values,
                });
            }
        }
    }
    line_chart(
        "write faults on 4 CPUs",
        "guest instructions of all CPUs from the threads' start to the last fault, per fault (median of 5); flat = no SMP overhead",
        "faulting threads, one per CPU (log scale)",
        "guest instructions per fault, all CPUs",
        &SMP_THREADS,
        &series,
        false,
        &[],
    )
}

/// The paths whose cost an era can change: the fault, fork, unmap and GUP rows. The rows known
/// not to repeat (`NOT_REPEATING`: they wait on the host-timed disk) are left out: their
/// ratio between two boots says nothing about the era, and one of them (`file_msync_1m`, 216x
/// in one run) stretched the linear axis until every other path's dots sat on one line.
fn era_paths(rows: &[Row], eras: &[(u32, Run)]) -> Vec<String> {
    path_rows(rows)
        .into_iter()
        .map(|r| r.name.clone())
        .filter(|n| eras.iter().any(|(_, run)| run.get(n).is_some()))
        .filter(|n| !n.starts_with("rep_") && !super::not_repeating(n))
        .collect()
}

/// Every path under each era (`era=YEAR`) relative to the last (newest) era: one dot per era
/// on a linear axis around 1.0, so differences of a few percent show; the absolute figures are
/// in the era table and `results.json`.
pub fn era_chart(rows: &[Row], eras: &[(u32, Run)]) -> Result<String> {
    let categories = era_paths(rows, eras);
    let Some((ref_year, reference)) = eras.last() else {
        return Err(anyhow!("no era to draw"));
    };
    let ratio = |run: &Run, name: &str| {
        let base = reference.get(name)?.median as f64;
        (base > 0.0).then(|| run.get(name).map(|m| m.median as f64 / base))?
    };
    let ratios: Vec<Vec<Option<f64>>> = eras
        .iter()
        .map(|(_, run)| categories.iter().map(|n| ratio(run, n)).collect())
        .collect();
    let (lo, hi) = ratios
        .iter()
        .flatten()
        .flatten()
        .fold((1.0f64, 1.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let pad = ((hi - lo) * 0.15).max(0.05);
    let (x_lo, x_hi) = (lo - pad, hi + pad);
    let groups = categories.len().max(1);
    let row_h = 34u32;
    let (width, height) = (1000u32, HEADER_H + 30 + row_h * groups as u32 + 60);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, body) = root.split_vertically(HEADER_H);
        let legend: Vec<(String, RGBColor, Mark)> = eras
            .iter()
            .enumerate()
            .map(|(i, (year, _))| {
                (
                    format!("era={year}"),
                    ERA_COLORS[i % ERA_COLORS.len()],
                    Mark::Square,
                )
            })
            .collect();
        header(
            &top,
            "cowlab per era",
            &format!(
                "each path's median under era=YEAR over its median under era={ref_year} (1.0 = the same instructions)"
            ),
            &legend,
        )?;
        let mut chart = ChartBuilder::on(&body)
            .margin_right(40)
            .margin_top(10)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d(x_lo..x_hi, 0f64..groups as f64)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(format!("relative to era={ref_year}"))
            .x_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(1.0, 0.0), (1.0, groups as f64)],
                BLACK.stroke_width(1),
            )))
            .map_err(draw_err)?;
        let n = eras.len().max(1) as f64;
        for (g, name) in categories.iter().enumerate() {
            let center = (groups - g) as f64 - 0.5;
            let (px, py) = chart.backend_coord(&(x_lo, center));
            root.draw(&Text::new(
                name.clone(),
                (px - 8, py),
                TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(draw_err)?;
            for (i, per_era) in ratios.iter().enumerate() {
                let Some(r) = per_era[g] else {
                    continue;
                };
                // Eras side by side within the row, oldest on top.
                let y = center + 0.3 - 0.6 * (i as f64 + 0.5) / n;
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (r, y),
                        4,
                        ERA_COLORS[i % ERA_COLORS.len()].filled(),
                    )))
                    .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The era comparison as a Markdown table (paths down, eras across).
pub fn era_table(eras: &[(u32, Run)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, run) in eras {
        for m in &run.measurements {
            if !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
    }
    let mut out = String::from("| name |");
    for (year, _) in eras {
        out.push_str(&format!(" era={year} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(eras.len()));
    out.push('\n');
    for name in names {
        out.push_str(&format!("| {name} |"));
        for (_, run) in eras {
            match run.get(name) {
                Some(m) => out.push_str(&format!(" {} |", m.median)),
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    out
}

/// `results.json`'s `eras`: per era, every measured path's median.
pub fn era_json(eras: &[(u32, Run)]) -> serde_json::Value {
    eras.iter()
        .map(|(year, run)| {
            let medians: serde_json::Map<String, serde_json::Value> = run
                .measurements
                .iter()
                .map(|m| (m.name.clone(), m.median.into()))
                .collect();
            serde_json::json!({ "era": year, "medians": medians })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::report::{rows, Linux};
    use super::super::results::{linux_baseline, targets, Reference, FIXTURE};
    use super::*;

    fn well_formed(svg: &str) {
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn a_legend_wider_than_the_chart_wraps_to_a_second_line() {
        let entry = |l: &str| (l.to_owned(), TARGET, Mark::Square);
        // smp.svg's four series on an 800 px chart: the fourth went past the edge.
        let legend = [
            entry("cowlab, disjoint ranges"),
            entry("Linux 6.1.0-57-amd64, disjoint ranges"),
            entry("cowlab, one shared range"),
            entry("Linux 6.1.0-57-amd64, one shared range"),
        ];
        let places = legend_places(&legend, 800);
        assert_eq!(places[0], (12, 51));
        assert!(places
            .iter()
            .any(|&(x, y)| x == 12 && y == 51 + LEGEND_LINE));
        for ((label, _, _), (x, y)) in legend.iter().zip(&places) {
            assert!(
                x + 18 + 8 * label.chars().count() as i32 <= 800 - 12,
                "{label}"
            );
            assert!(y + 16 < HEADER_H as i32, "{label}");
        }
        // A short legend stays on one line.
        assert!(legend_places(&legend[..2], 800)
            .iter()
            .all(|&(_, y)| y == 51));
    }

    #[test]
    fn a_figure_starts_after_a_target_tick_that_would_cover_it() {
        // fork_per_mib 8315 against 9000, pin_longterm 97 against 120: the tick sat on the text.
        assert_eq!(label_x(8315.0, Some(9000.0)), 9000.0);
        assert_eq!(label_x(97.0, Some(120.0)), 120.0);
        // fork_base 9022 against 15000 (session 9's paths.svg).
        assert_eq!(label_x(9022.0, Some(15000.0)), 15000.0);
        // Far past the end, or well inside the bar, or no target: at the bar's end.
        assert_eq!(label_x(139.0, Some(100.0)), 139.0);
        assert_eq!(label_x(142.0, Some(60.0)), 142.0);
        assert_eq!(label_x(7275.0, Some(15000.0)), 7275.0);
        assert_eq!(label_x(5.0, None), 5.0);
    }

    #[test]
    fn every_row_with_a_target_is_drawn_even_without_linux() {
        let run = Run::parse(FIXTURE).unwrap();
        let rows1 = rows(&run, None, Linux::Stored(&linux_baseline()), &targets());
        let svg = paths_chart(&rows1, "Linux").unwrap();
        well_formed(&svg);
        assert!(svg.contains("anon_write_fault"));
        // A target without any cowlab figure (not in the fixture) and without Linux is not drawn;
        // gup_fast has a target but no Linux figure: if cowlab measured it, it is drawn.
        let mut run2 = run.clone();
        run2.measurements.push(super::super::results::Measurement {
            name: "gup_fast_pin_per_page".into(),
            unit: "tsc/page".into(),
            median: 140,
            min: 140,
            n: 5,
        });
        let rows2 = rows(&run2, None, Linux::Stored(&linux_baseline()), &targets());
        let svg = paths_chart(&rows2, "Linux").unwrap();
        assert!(svg.contains("gup_fast_pin_per_page"));
        assert!(svg.contains("no Linux figure"));
    }

    #[test]
    fn the_fork_chart_draws_measured_linux_points_only() {
        let cowlab = Run::parse(FIXTURE).unwrap();
        let linux = Run::parse(
            "BENCH name=fork_base unit=tsc median=72000 min=72000 n=5\n\
             BENCH name=fork_touched_mib_1 unit=tsc median=111111 min=1 n=5\n",
        )
        .unwrap();
        let measured = rows(&cowlab, None, Linux::Measured(&linux), &targets());
        let svg = fork_chart(&measured, "Linux 6.1").unwrap();
        well_formed(&svg);
        assert!(svg.contains("111.1k"), "the measured point is labelled");
        assert!(svg.contains("Linux 6.1 bare fork"));
        assert!(
            svg.contains(">\nLinux 6.1\n</text>"),
            "the Linux series in the legend"
        );
        // The log x axis is labelled with the touched sizes.
        for mib in ["4", "16", "64", "256"] {
            assert!(svg.contains(&format!(">\n{mib}\n</text>")), "x label {mib}");
        }
        // A column with no per-size figure gets no Linux line: nothing is modelled from
        // fork_base + fork_per_mib * MiB (at 1 MiB that model would be 105.2k).
        let old = Reference::parse("name,linux\nfork_base,72328\nfork_per_mib,32866\n").unwrap();
        let stored = rows(&cowlab, None, Linux::Stored(&old), &targets());
        let svg = fork_chart(&stored, "Linux stored").unwrap();
        well_formed(&svg);
        assert!(!svg.contains("105.2k"), "a modelled point was drawn");
        assert!(svg.contains("Linux stored bare fork"));
        assert!(
            !svg.contains(">\nLinux stored\n</text>"),
            "no Linux series in the legend"
        );
        well_formed(&vma_chart(&stored, "Linux").unwrap());
    }

    #[test]
    fn era_chart_and_table_name_every_era() {
        let run = Run::parse(FIXTURE).unwrap();
        let eras = vec![(2009, run.clone()), (2023, run.clone())];
        let rows = rows(&run, None, Linux::Stored(&linux_baseline()), &targets());
        let svg = era_chart(&rows, &eras).unwrap();
        well_formed(&svg);
        assert!(svg.contains("era=2009") && svg.contains("era=2023"));
        let table = era_table(&eras);
        assert!(
            table.contains("| anon_write_fault | 1204 | 1204 |"),
            "{table}"
        );
    }

    #[test]
    fn the_era_chart_leaves_out_rows_that_do_not_repeat() {
        // A host-timed row with a stored Linux figure: drawn in the paths chart, not here.
        let text =
            format!("{FIXTURE}BENCH name=file_msync_1m unit=tsc median=312365 min=312365 n=8\n");
        let run = Run::parse(&text).unwrap();
        let rows = rows(&run, None, Linux::Stored(&linux_baseline()), &targets());
        assert!(path_rows(&rows).iter().any(|r| r.name == "file_msync_1m"));
        let eras = vec![(2009, run.clone()), (2023, run.clone())];
        let paths = era_paths(&rows, &eras);
        assert!(paths.iter().any(|n| n == "anon_write_fault"), "{paths:?}");
        assert!(!paths.iter().any(|n| n == "file_msync_1m"), "{paths:?}");
    }

    #[test]
    fn the_smp_chart_draws_both_kernels_and_leaves_the_paths_chart() {
        let mut cowlab = Run::parse(FIXTURE).unwrap();
        let mut linux = Run::default();
        for (i, n) in SMP_THREADS.iter().enumerate() {
            for (kind, extra) in [("disjoint", 0), ("shared", 40)] {
                for (run, base) in [(&mut cowlab, 900), (&mut linux, 2700)] {
                    run.measurements.push(super::super::results::Measurement {
                        name: format!("smp_fault_{kind}_{n}"),
                        unit: "tsc/fault".into(),
                        median: base + extra + 10 * i as u64,
                        min: base,
                        n: 5,
                    });
                }
            }
        }
        let rows = rows(&cowlab, None, Linux::Measured(&linux), &targets());
        let svg = smp_chart(&rows, "Linux 6.1").unwrap();
        well_formed(&svg);
        for label in [
            "cowlab, disjoint ranges",
            "cowlab, one shared range",
            "Linux 6.1, disjoint ranges",
            "Linux 6.1, one shared range",
        ] {
            assert!(svg.contains(&format!(">\n{label}\n</text>")), "{label}");
        }
        // The points are labelled with their values (cowlab shared at 4 threads: 960).
        assert!(svg.contains(">\n960\n</text>"), "{svg}");
        assert!(svg.contains(">\n2\n</text>"), "x label 2");
        let paths = paths_chart(&rows, "Linux 6.1").unwrap();
        assert!(!paths.contains("smp_fault_"), "the series is in smp.svg");
        // Without Linux's rows its series are absent, not zero.
        let stored = rows_stored(&cowlab);
        let svg = smp_chart(&stored, "Linux").unwrap();
        assert!(!svg.contains("Linux, disjoint ranges"));
    }

    fn rows_stored(cowlab: &Run) -> Vec<Row> {
        let none = Reference::parse("name,linux\n").unwrap();
        rows(cowlab, None, Linux::Stored(&none), &targets())
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(999.0), "999");
    }
}
