//! Hand-written SVG charts (no plotting dependency): bars per path against Linux, fork cost
//! against touched memory, fault cost against VMA count.

use std::fmt::Write as _;

use super::report::Row;

const FAMILY: &str = "font-family=\"sans-serif\"";
const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";
const COWLAB: &str = "#1f77b4";
const LINUX: &str = "#999999";
const TARGET: &str = "#d62728";
const HOST: &str = "#2ca02c";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn open(width: u32, height: u32, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" {FAMILY} font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    )
}

/// Every path with both a cowlab and a Linux number, as horizontal bars relative to Linux
/// (Linux = 1.0), with issue 7's target marked where there is one.
pub fn paths_chart(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.ratio().is_some()).collect();
    let label_w = 190.0;
    let plot_w = 560.0;
    let row_h = 34.0;
    let top = 50.0;
    let height = top + row_h * rows.len() as f64 + 40.0;
    let max = rows
        .iter()
        .flat_map(|r| {
            let linux = r.linux.unwrap_or(1).max(1) as f64;
            [
                r.ratio().unwrap_or(0.0),
                r.target.map_or(0.0, |t| t as f64 / linux),
            ]
        })
        .fold(1.0f64, f64::max)
        * 1.1;
    let x = |ratio: f64| label_w + plot_w * ratio / max;
    let mut out = open(
        (label_w + plot_w + 120.0) as u32,
        height as u32,
        "cowlab vs Linux 6.1 (guest instructions under -icount; Linux = 1.0; red tick = target)",
    );
    let _ = writeln!(
        out,
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>",
        x(1.0),
        top - 10.0,
        height - 30.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let linux = r.linux.unwrap_or(0);
        let cowlab = r.cowlab.as_ref().map_or(0, |m| m.median);
        let ratio = r.ratio().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y + 17.0,
            escape(&r.name)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"11\" fill=\"{LINUX}\"/>\
             <text x=\"{:.1}\" y=\"{}\" {FAMILY} font-size=\"10\">Linux {linux}</text>",
            y + 4.0,
            x(1.0) - label_w,
            x(1.0) + 4.0,
            y + 13.0,
        );
        let _ = writeln!(
            out,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"11\" fill=\"{COWLAB}\"/>\
             <text x=\"{:.1}\" y=\"{}\" {FAMILY} font-size=\"10\">cowlab {cowlab} ({ratio:.2})</text>",
            y + 17.0,
            (x(ratio) - label_w).max(1.0),
            x(ratio) + 4.0,
            y + 26.0,
        );
        if let (Some(t), Some(l)) = (r.target, r.linux) {
            let tx = x(t as f64 / l.max(1) as f64);
            let _ = writeln!(
                out,
                "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{}\" stroke=\"{TARGET}\" stroke-width=\"2\"/>",
                y + 2.0,
                y + 30.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// One line of a [`line_chart`].
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
    /// One value per x position (`None`: no point there).
    pub values: Vec<Option<f64>>,
}

/// A line chart over categorical x positions (equally spaced: 1, 4, 16, 64, 256 MiB or 1, 10,
/// 100, 1000 VMAs are equally spaced on a log axis), y from 0.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &[String],
    series: &[Series],
) -> String {
    let (left, right, top, bottom) = (90.0, 170.0, 40.0, 50.0);
    let (plot_w, plot_h) = (480.0, 280.0);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let px = |i: usize| left + plot_w * (i as f64 + 0.5) / xs.len().max(1) as f64;
    let py = |v: f64| top + plot_h * (1.0 - v / max);
    let mut out = open(
        (left + plot_w + right) as u32,
        (top + plot_h + bottom) as u32,
        title,
    );
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"black\"/>\
         <line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>",
        top + plot_h,
        left + plot_w
    );
    for k in 0..=4 {
        let v = max / 1.1 * k as f64 / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eeeeee\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" {FONT} text-anchor=\"end\">{4}</text>",
            py(v),
            left + plot_w,
            left - 6.0,
            py(v) + 4.0,
            human(v)
        );
    }
    for (i, x) in xs.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" {FONT} text-anchor=\"middle\">{}</text>",
            px(i),
            top + plot_h + 18.0,
            escape(x)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{}\" {FONT} text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" {FONT} text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        left + plot_w / 2.0,
        top + plot_h + 40.0,
        escape(x_label),
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", px(i), py(v))))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
            points.join(" "),
            s.color
        );
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}</title></circle>",
                    px(i),
                    py(*v),
                    s.color,
                    human(*v)
                );
            }
        }
        let ly = top + 10.0 + 20.0 * k as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" y1=\"{ly}\" x2=\"{1}\" y2=\"{ly}\" stroke=\"{2}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{3}\" y=\"{4}\" {FONT}>{5}</text>",
            left + plot_w + 10.0,
            left + plot_w + 34.0,
            s.color,
            left + plot_w + 40.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// 1234567 -> "1.23M", 12345 -> "12.3k".
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn median_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == name)
        .and_then(|r| r.cowlab.as_ref())
        .map(|m| m.median as f64)
}

fn host_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == name)
        .and_then(|r| r.host.as_ref())
        .map(|m| m.median as f64)
}

fn linux_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == name)
        .and_then(|r| r.linux)
        .map(|v| v as f64)
}

pub const FORK_MIB: [u64; 5] = [1, 4, 16, 64, 256];
pub const VMAS: [u64; 4] = [1, 10, 100, 1000];

/// Fork cost against touched MiB; Linux as its `fork_base + fork_per_mib * MiB` line.
pub fn fork_chart(rows: &[Row], with_host: bool) -> String {
    let names: Vec<String> = FORK_MIB
        .iter()
        .map(|m| format!("fork_touched_mib_{m}"))
        .collect();
    let mut series = vec![Series {
        label: "cowlab".into(),
        color: COWLAB,
        dashed: false,
        values: names.iter().map(|n| median_of(rows, n)).collect(),
    }];
    if let (Some(base), Some(per)) = (linux_of(rows, "fork_base"), linux_of(rows, "fork_per_mib")) {
        series.push(Series {
            label: "Linux 6.1 (base + per MiB)".into(),
            color: LINUX,
            dashed: true,
            values: FORK_MIB
                .iter()
                .map(|&m| Some(base + per * m as f64))
                .collect(),
        });
    }
    if with_host {
        series.push(Series {
            label: "host (cycles)".into(),
            color: HOST,
            dashed: false,
            values: names.iter().map(|n| host_of(rows, n)).collect(),
        });
    }
    line_chart(
        "fork cost against touched memory",
        "MiB written before fork",
        "guest instructions per fork",
        &FORK_MIB.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        &series,
    )
}

/// Anonymous write-fault cost against the number of extra VMAs; Linux's anon_write_fault as a
/// flat reference line.
pub fn vma_chart(rows: &[Row], with_host: bool) -> String {
    let names: Vec<String> = VMAS.iter().map(|v| format!("fault_vmas_{v}")).collect();
    let mut series = vec![Series {
        label: "cowlab".into(),
        color: COWLAB,
        dashed: false,
        values: names.iter().map(|n| median_of(rows, n)).collect(),
    }];
    if let Some(linux) = linux_of(rows, "anon_write_fault") {
        series.push(Series {
            label: "Linux 6.1 anon_write_fault".into(),
            color: LINUX,
            dashed: true,
            values: VMAS.iter().map(|_| Some(linux)).collect(),
        });
    }
    if with_host {
        series.push(Series {
            label: "host (cycles)".into(),
            color: HOST,
            dashed: false,
            values: names.iter().map(|n| host_of(rows, n)).collect(),
        });
    }
    line_chart(
        "anonymous write fault against VMA count",
        "VMAs added to the address space",
        "guest instructions per fault",
        &VMAS.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::super::report::rows;
    use super::super::results::{linux_baseline, targets, Run, FIXTURE};
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let run = Run::parse(FIXTURE).unwrap();
        let rows = rows(&run, None, &linux_baseline(), &targets());
        for svg in [
            paths_chart(&rows),
            fork_chart(&rows, false),
            vma_chart(&rows, true),
        ] {
            assert!(svg.starts_with("<svg xmlns"), "{svg}");
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            // XML forbids an attribute twice in one element.
            for element in svg.split('<') {
                let tag = element.split('>').next().unwrap_or("");
                let mut names: Vec<&str> = tag
                    .split_whitespace()
                    .filter_map(|w| w.split_once('=').map(|(n, _)| n))
                    .collect();
                let all = names.len();
                names.sort_unstable();
                names.dedup();
                assert_eq!(names.len(), all, "duplicate attribute in <{element}");
            }
        }
        assert!(paths_chart(&rows).contains("anon_write_fault"));
        assert!(fork_chart(&rows, false).contains("153.2k"));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(999.0), "999");
    }
}
