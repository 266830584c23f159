//! `chatctl load --report FILE.html`: one self-contained page (no scripts,
//! no external files) with the run's figures, its latency over time and its
//! latency histograms, drawn as inline SVG.

use std::fmt::Write;

use super::Report;
use super::tally::Bucket;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 36.0;
const MARGIN_TOP: f64 = 28.0;

/// The page for `report`.
pub fn html(report: &Report) -> String {
    let figures = &report.figures;
    let shape = &report.shape;
    let (messages, connections) = (&figures.messages, &figures.connections);
    let mut page = String::new();
    let title = format!("chatctl load — {}", escape(&report.url));
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 800px; color: #1d2433; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 12px 3px 0; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.met {{ color: #1a7f37; }} .missed {{ color: #cf222e; font-weight: 600; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #57606a; }}
</style></head><body>
<h1>{title}</h1>
<p>Run {run}{interrupted}: {users} users × {per_user} connection(s) in {rooms} room(s), {rate} messages/min per user,
{bytes} bytes, {direct}% direct, {duration} s of sending; {elapsed:.1} s in all.</p>
"#,
        run = escape(&report.run),
        interrupted = if report.interrupted {
            " (interrupted by Ctrl-C)"
        } else {
            ""
        },
        users = shape.users,
        per_user = shape.connections_per_user,
        rooms = shape.rooms,
        rate = shape.messages_per_minute_per_user,
        bytes = shape.message_bytes,
        direct = shape.direct_percent,
        duration = shape.duration.as_secs_f64(),
        elapsed = report.elapsed_seconds,
    );
    if let Some(verdicts) = &report.slo {
        page.push_str("<h2>SLO</h2><table>");
        for verdict in verdicts {
            let (class, word) = if verdict.met {
                ("met", "met")
            } else {
                ("missed", "missed")
            };
            let _ = write!(
                page,
                r#"<tr><td>{}</td><td class="n">{}</td><td class="{class}">{word}</td></tr>"#,
                escape(&verdict.clause),
                verdict.measured
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Figures</h2><table>");
    let rows: Vec<(&str, String)> = vec![
        (
            "connections opened / failed / lost",
            format!("{} / {} / {}", connections.opened, connections.failed, connections.lost),
        ),
        (
            "messages sent / refused",
            format!(
                "{} ({:.1}/s) / {}",
                messages.sent, messages.sent_per_second, messages.refused
            ),
        ),
        (
            "deliveries received / expected",
            format!(
                "{} ({:.1}/s) / {}",
                messages.delivered, messages.delivered_per_second, messages.expected
            ),
        ),
        (
            "lost / duplicated / out of order",
            format!(
                "{} / {} / {}",
                messages.lost, messages.duplicated, messages.out_of_order
            ),
        ),
        ("send → receive p50 / p95 / p99 / max", latency_row(&figures.latency)),
        ("handshake p50 / p95 / p99 / max", latency_row(&connections.handshake)),
        (
            "load generator CPU",
            match report.generator.cpu_ms_per_1000_deliveries {
                Some(per) => format!("{:.0} ms, {per:.1} ms per 1,000 deliveries", report.generator.cpu_ms),
                None => format!("{:.0} ms", report.generator.cpu_ms),
            },
        ),
    ];
    for (name, value) in rows {
        let _ = write!(page, r#"<tr><th>{name}</th><td class="n">{value}</td></tr>"#);
    }
    page.push_str("</table>");
    if !figures.errors.is_empty() {
        page.push_str("<h2>Errors</h2><table>");
        for (kind, count) in &figures.errors {
            let _ = write!(page, r#"<tr><td>{}</td><td class="n">{count}</td></tr>"#, escape(kind));
        }
        page.push_str("</table>");
    }

    page.push_str("<h2>Latency over time</h2>");
    let points = |pick: fn(&super::tally::SecondFigures) -> Option<f64>| -> Vec<(f64, f64)> {
        figures
            .timeline
            .iter()
            .filter_map(|s| pick(s).map(|v| (s.second as f64, v)))
            .collect()
    };
    page.push_str(&line_chart(
        "send → receive, ms, per second of the run",
        &[
            ("p50", "#0969da", points(|s| s.p50_ms)),
            ("p99", "#cf222e", points(|s| s.p99_ms)),
            ("max", "#8c959f", points(|s| s.max_ms)),
        ],
    ));
    page.push_str(&line_chart(
        "messages per second",
        &[
            ("delivered", "#1a7f37", points(|s| Some(s.delivered as f64))),
            ("sent", "#0969da", points(|s| Some(s.sent as f64))),
            ("errors", "#cf222e", points(|s| Some(s.errors as f64))),
        ],
    ));
    page.push_str("<h2>Latency histograms</h2>");
    page.push_str(&histogram(
        "send → receive (deliveries per bucket)",
        &figures.histograms.delivery,
    ));
    page.push_str(&histogram(
        "handshake (connections per bucket)",
        &figures.histograms.handshake,
    ));
    page.push_str("</body></html>\n");
    page
}

fn latency_row(latency: &super::tally::Latency) -> String {
    format!(
        "{} / {} / {} / {} ms",
        latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|bound| *bound >= value)
        .unwrap_or(10.0 * power)
}

fn svg_open(title: &str) -> String {
    format!(
        r#"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}"><text x="{MARGIN_LEFT}" y="16">{t}</text>"#,
        t = escape(title)
    )
}

/// Axes with 5 gridlines up to `y_max`, and the x axis labelled at its ends.
fn axes(svg: &mut String, y_max: f64, x_labels: (&str, &str)) {
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    for step in 0..=4 {
        let y = HEIGHT - MARGIN_BOTTOM - plot_height * f64::from(step) / 4.0;
        let value = y_max * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{WIDTH}" y2="{y:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            short(value)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{MARGIN_LEFT}" y="{:.1}">{}</text><text x="{WIDTH}" y="{:.1}" text-anchor="end">{}</text>"#,
        HEIGHT - 12.0,
        escape(x_labels.0),
        HEIGHT - 12.0,
        escape(x_labels.1)
    );
}

fn short(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// One line of a chart: its name, its colour, its (x, y) points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over the run's seconds, one per series, with a legend.
fn line_chart(title: &str, series: &[Line]) -> String {
    let mut svg = svg_open(title);
    let x_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    axes(&mut svg, y_max, ("0 s", &format!("{x_max:.0} s")));
    let plot_width = WIDTH - MARGIN_LEFT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    for (n, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    MARGIN_LEFT + plot_width * x / x_max,
                    HEIGHT - MARGIN_BOTTOM - plot_height * y / y_max
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{:.1}" y="16" fill="{colour}" style="fill:{colour}">■ {name}</text>"#,
            path.join(" "),
            WIDTH - 240.0 + 80.0 * n as f64
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Bars, one per latency bucket, labelled with their upper bound.
fn histogram(title: &str, buckets: &[Bucket]) -> String {
    let mut svg = svg_open(title);
    if buckets.is_empty() {
        svg.push_str(r#"<text x="60" y="60">nothing measured</text></svg></figure>"#);
        return svg;
    }
    let y_max = nice_ceiling(buckets.iter().map(|b| b.count as f64).fold(0.0, f64::max));
    axes(&mut svg, y_max, ("", "ms (upper bound of each bar)"));
    let plot_width = WIDTH - MARGIN_LEFT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let slot = plot_width / buckets.len() as f64;
    for (n, bucket) in buckets.iter().enumerate() {
        let height = plot_height * bucket.count as f64 / y_max;
        let x = MARGIN_LEFT + slot * n as f64;
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#0969da"><title>≤ {} ms: {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            x + slot * 0.1,
            HEIGHT - MARGIN_BOTTOM - height,
            slot * 0.8,
            bucket.le_ms,
            bucket.count,
            x + slot / 2.0,
            HEIGHT - MARGIN_BOTTOM + 14.0,
            short(bucket.le_ms)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.07), 0.1);
    }

    #[test]
    fn text_from_the_run_cannot_break_the_page() {
        assert_eq!(escape(r#"<a href="x">&"#), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
