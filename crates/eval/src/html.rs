//! HTML rendering of [`EvalReport`]: one page, inline CSS and SVG, no script, fonts or network,
//! so it opens the same from a CI artefact, an e-mail or an air-gapped laptop.

use std::fmt::Write;

use crate::report::EvalReport;

/// Escapes text for both element content and quoted attribute values (species names and
/// slice values come from data files and may hold `<`, `&` or quotes).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.3}"))
}

fn class_colour(class: &str) -> &'static str {
    match class {
        "Aves" => "#2563eb",
        "Amphibia" => "#059669",
        "Insecta" => "#d97706",
        "Mammalia" => "#dc2626",
        _ => "#6b7280",
    }
}

/// Distinct line colours for the PR curves.
const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563",
];

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#111}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
svg text{font-size:11px;font-family:inherit}.muted{color:#6b7280}";

pub(crate) fn render(r: &EvalReport) -> String {
    let mut h = String::new();
    let title = escape(&r.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    summary(&mut h, r);
    ap_bars(&mut h, r);
    pr_curves(&mut h, r);
    slice_table(&mut h, r);
    confusion(&mut h, r);
    class_table(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, r: &EvalReport) {
    let o = &r.overall;
    let _ = writeln!(
        h,
        "<table id=\"summary\"><tr><th>rows (5 s windows)</th><td class=\"num\">{}</td></tr>\
         <tr><th>species</th><td class=\"num\">{}</td></tr>\
         <tr><th>macro ROC-AUC (competition metric)</th><td class=\"num\">{}</td></tr>\
         <tr><th>species scored for ROC-AUC</th><td class=\"num\">{}</td></tr>\
         <tr><th>macro AP</th><td class=\"num\">{}</td></tr>\
         <tr><th>species scored for AP</th><td class=\"num\">{}</td></tr></table>",
        r.n_rows,
        r.n_species,
        fmt_opt(o.macro_auc),
        o.n_auc_scored,
        fmt_opt(o.macro_ap),
        o.n_ap_scored
    );
}

fn ap_bars(h: &mut String, r: &EvalReport) {
    let mut rows: Vec<_> = r
        .per_class
        .iter()
        .filter_map(|c| c.ap.map(|ap| (c, ap)))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    h.push_str("<h2>Average precision per species</h2>\n");
    if rows.is_empty() {
        h.push_str("<p class=\"muted\">No species has a positive row.</p>\n");
        return;
    }
    let (label_w, bar_w, row_h, top) = (200.0, 420.0, 14.0, 24.0);
    let width = label_w + bar_w + 60.0;
    let height = top + rows.len() as f64 * row_h + 8.0;
    let _ = write!(
        h,
        "<svg id=\"ap-bars\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"average precision per species\">"
    );
    for tick in 0..=5 {
        let x = label_w + bar_w * f64::from(tick) / 5.0;
        let _ = write!(
            h,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{x}\" y=\"14\" text-anchor=\"middle\">{:.1}</text>",
            top - 4.0,
            height - 4.0,
            f64::from(tick) / 5.0
        );
    }
    for (i, (c, ap)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let name = escape(&c.species);
        let class = escape(&c.class_name);
        let _ = write!(
            h,
            "<g><title>{name} ({class}): AP {ap:.3}, ROC-AUC {}, {} positive</title>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{name}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{:.2}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{:.2}\" y=\"{}\">{ap:.3}</text></g>",
            fmt_opt(c.auc),
            c.n_positive,
            label_w - 6.0,
            y + row_h - 3.0,
            y + 1.0,
            bar_w * ap.clamp(0.0, 1.0),
            row_h - 2.0,
            class_colour(&c.class_name),
            label_w + bar_w * ap.clamp(0.0, 1.0) + 4.0,
            y + row_h - 3.0,
        );
    }
    h.push_str("</svg>\n<p class=\"muted\">Colour = taxon class: <span style=\"color:#2563eb\">Aves</span>, <span style=\"color:#059669\">Amphibia</span>, <span style=\"color:#d97706\">Insecta</span>, <span style=\"color:#dc2626\">Mammalia</span>.</p>\n");
}

fn pr_curves(h: &mut String, r: &EvalReport) {
    h.push_str("<h2>Precision-recall curves (best and worst species by AP)</h2>\n");
    if r.pr_curves.is_empty() {
        h.push_str("<p class=\"muted\">No curve to draw.</p>\n");
        return;
    }
    let (left, top, w, ht): (f64, f64, f64, f64) = (44.0, 12.0, 420.0, 300.0);
    let legend_w = 260.0;
    let width = left + w + 20.0 + legend_w;
    let height = (top + ht + 40.0).max(top + 18.0 * r.pr_curves.len() as f64 + 10.0);
    let px = |recall: f64| left + w * recall.clamp(0.0, 1.0);
    let py = |precision: f64| top + ht * (1.0 - precision.clamp(0.0, 1.0));
    let _ = write!(
        h,
        "<svg id=\"pr-curves\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"precision-recall curves\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{ht}\" fill=\"none\" stroke=\"#9ca3af\"/>"
    );
    for tick in 0..=5 {
        let v = f64::from(tick) / 5.0;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            px(v),
            top + ht + 14.0,
            left - 4.0,
            py(v) + 4.0
        );
    }
    let _ = write!(
        h,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">recall</text>\
         <text x=\"12\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">precision</text>",
        left + w / 2.0,
        top + ht + 30.0,
        top + ht / 2.0,
        top + ht / 2.0
    );
    for (i, c) in r.pr_curves.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        // Step plot: precision P_n holds over (R_{n-1}, R_n], the area AP measures.
        let mut pts = String::new();
        let mut prev_recall = 0.0;
        for p in &c.points {
            let _ = write!(
                pts,
                "{:.2},{:.2} {:.2},{:.2} ",
                px(prev_recall),
                py(p.precision),
                px(p.recall),
                py(p.precision)
            );
            prev_recall = p.recall;
        }
        let name = escape(&c.species);
        let dash = if c.group == "bottom" {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let ly = top + 10.0 + 18.0 * i as f64;
        let lx = left + w + 20.0;
        let _ = write!(
            h,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"{dash}><title>{name}: AP {:.3}</title></polyline>\
             <line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{name} ({}) AP {:.3}</text>",
            pts.trim_end(),
            c.ap,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(&c.group),
            c.ap
        );
    }
    h.push_str("</svg>\n");
}

fn mini_bar(v: Option<f64>) -> String {
    match v {
        Some(x) => format!(
            "<svg width=\"80\" height=\"10\"><rect width=\"80\" height=\"10\" fill=\"#f3f4f6\"/><rect width=\"{:.1}\" height=\"10\" fill=\"#2563eb\"/></svg>",
            80.0 * x.clamp(0.0, 1.0)
        ),
        None => String::new(),
    }
}

fn slice_table(h: &mut String, r: &EvalReport) {
    h.push_str("<h2>Slices</h2>\n");
    if r.slices.is_empty() {
        h.push_str("<p class=\"muted\">No slices.</p>\n");
        return;
    }
    h.push_str("<table id=\"slices\"><tr><th>dimension</th><th>value</th><th>rows</th><th>species scored</th><th>macro ROC-AUC</th><th></th><th>macro AP</th></tr>\n");
    for s in &r.slices {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&s.dimension),
            escape(&s.value),
            s.n_rows,
            s.n_species_scored,
            fmt_opt(s.macro_auc),
            mini_bar(s.macro_auc),
            fmt_opt(s.macro_ap)
        );
    }
    h.push_str("</table>\n");
}

fn confusion(h: &mut String, r: &EvalReport) {
    let c = &r.confusion;
    h.push_str("<h2>Argmax confusion of the most frequent species</h2>\n");
    if c.true_classes.is_empty() {
        h.push_str("<p class=\"muted\">No row has a single positive.</p>\n");
        return;
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Rows with exactly one positive ({} rows); each row of the matrix is a true species, each column the species with the highest score. Shade is the share of the row.</p>",
        c.n_rows_used
    );
    let cell = 30.0;
    let (left, top) = (170.0, 120.0);
    let width = left + cell * c.predicted.len() as f64 + 10.0;
    let height = top + cell * c.true_classes.len() as f64 + 10.0;
    let _ = write!(
        h,
        "<svg id=\"confusion\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"confusion matrix\">"
    );
    for (j, p) in c.predicted.iter().enumerate() {
        let x = left + cell * j as f64 + cell / 2.0;
        let y = top - 6.0;
        let _ = write!(
            h,
            "<text x=\"{x}\" y=\"{y}\" transform=\"rotate(-50 {x} {y})\">{}</text>",
            escape(p)
        );
    }
    for (i, (t, row)) in c.true_classes.iter().zip(&c.counts).enumerate() {
        let y = top + cell * i as f64;
        let total: u64 = row.iter().sum();
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + cell / 2.0 + 4.0,
            escape(t)
        );
        for (j, &n) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            };
            // White → blue by share of the row; text flips to white on dark cells.
            let shade = |full: f64| (255.0 - (255.0 - full) * share).round() as u8;
            let fill = format!("rgb({},{},{})", shade(37.0), shade(99.0), shade(235.0));
            let ink = if share > 0.5 { "#fff" } else { "#111" };
            let x = left + cell * j as f64;
            let _ = write!(
                h,
                "<g><title>true {} → predicted {}: {n} of {total}</title>\
                 <rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"#e5e7eb\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{n}</text></g>",
                escape(t),
                escape(&c.predicted[j]),
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    h.push_str("</svg>\n");
}

fn class_table(h: &mut String, r: &EvalReport) {
    h.push_str("<h2>All species</h2>\n<details><summary>Per-species ROC-AUC and AP</summary>\n<table id=\"per-class\"><tr><th>species</th><th>class</th><th>positives</th><th>ROC-AUC</th><th>AP</th></tr>\n");
    for c in &r.per_class {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&c.species),
            escape(&c.class_name),
            c.n_positive,
            fmt_opt(c.auc),
            fmt_opt(c.ap)
        );
    }
    h.push_str("</table></details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_specials() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
