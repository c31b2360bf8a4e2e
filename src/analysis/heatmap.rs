//! The layer × expert utilisation heatmap as SVG, PNG and terminal text.
//!
//! Rows are the trace's MoE layers (top = first), columns the experts; a cell's value is the
//! expert's utilisation in that layer (fraction of the layer's tokens that ran it). Colours use
//! one scale for the whole map, from 0 to the largest cell, on a viridis-like ramp (dark purple =
//! never used, yellow = the busiest cell).

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::stats::RoutingStats;

/// Cell values (utilisation) and the largest one.
fn grid(s: &RoutingStats) -> (Vec<Vec<f64>>, f64) {
    let rows: Vec<Vec<f64>> = s.layers.iter().map(|l| l.utilisation()).collect();
    let max = rows.iter().flatten().copied().fold(0.0f64, f64::max);
    (rows, max)
}

/// Anchors of the colour ramp, from 0 to 1.
const RAMP: [[u8; 3]; 5] = [
    [0x44, 0x01, 0x54],
    [0x3b, 0x52, 0x8b],
    [0x21, 0x91, 0x8c],
    [0x5e, 0xc9, 0x62],
    [0xfd, 0xe7, 0x25],
];

/// The colour of `x` in [0, 1] (values outside are clamped).
pub fn colour(x: f64) -> [u8; 3] {
    let x = if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = x * (RAMP.len() - 1) as f64;
    let i = (f.floor() as usize).min(RAMP.len() - 2);
    let t = f - i as f64;
    let mut c = [0u8; 3];
    for (k, ck) in c.iter_mut().enumerate() {
        let a = RAMP[i][k] as f64;
        let b = RAMP[i + 1][k] as f64;
        *ck = (a + (b - a) * t).round() as u8;
    }
    c
}

fn scaled(v: f64, max: f64) -> f64 {
    if max > 0.0 {
        v / max
    } else {
        0.0
    }
}

/// Cell size in pixels for a map `n_expert` wide: about 1200 px wide, cells 4 to 24 px.
fn cell_px(n_expert: usize) -> usize {
    (1200 / n_expert.max(1)).clamp(4, 24)
}

/// A hand-written SVG: title, layer labels, expert ticks, a tooltip per cell, a colour bar.
pub fn svg(s: &RoutingStats, title: &str) -> String {
    let (rows, max) = grid(s);
    let ne = s.n_expert;
    let c = cell_px(ne);
    let (left, top) = (56usize, 48usize);
    let w = left + ne * c + 90;
    let h = top + rows.len() * c + 40;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="16" font-size="13">{} — expert utilisation per layer ({} tokens)</text>"#,
        xml_escape(title),
        s.tokens
    );
    let tick = if ne <= 16 {
        1
    } else if ne <= 64 {
        8
    } else {
        16
    };
    for e in (0..ne).step_by(tick) {
        let x = left + e * c + c / 2;
        let _ = writeln!(
            o,
            r#"<text x="{x}" y="{}" text-anchor="middle">{e}</text>"#,
            top - 6
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="30" text-anchor="middle">expert</text>"#,
        left + ne * c / 2
    );
    for (r, (row, l)) in rows.iter().zip(&s.layers).enumerate() {
        let y = top + r * c;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">L{}</text>"#,
            left - 6,
            y + c / 2 + 4,
            l.layer
        );
        for (e, &v) in row.iter().enumerate() {
            let [cr, cg, cb] = colour(scaled(v, max));
            let _ = writeln!(
                o,
                r##"<rect x="{}" y="{y}" width="{c}" height="{c}" fill="#{cr:02x}{cg:02x}{cb:02x}"><title>layer {} expert {e}: {:.1}% of tokens ({} uses)</title></rect>"##,
                left + e * c,
                l.layer,
                100.0 * v,
                l.counts[e]
            );
        }
    }
    // Colour bar.
    let bx = left + ne * c + 24;
    let bh = (rows.len() * c).max(40);
    let steps = 32;
    for i in 0..steps {
        let x = 1.0 - i as f64 / (steps - 1) as f64;
        let [cr, cg, cb] = colour(x);
        let _ = writeln!(
            o,
            r##"<rect x="{bx}" y="{}" width="14" height="{}" fill="#{cr:02x}{cg:02x}{cb:02x}"/>"##,
            top + i * bh / steps,
            bh / steps + 1
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}">{:.0}%</text>"#,
        bx + 18,
        top + 10,
        100.0 * max
    );
    let _ = writeln!(o, r#"<text x="{}" y="{}">0%</text>"#, bx + 18, top + bh);
    let _ = writeln!(o, "</svg>");
    o
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// RGB pixels of the map: one square of `cell_px` pixels per cell, a 1-pixel white line between
/// layers. Returns (width, height, pixels).
pub fn raster(s: &RoutingStats) -> (u32, u32, Vec<u8>) {
    let (rows, max) = grid(s);
    let c = cell_px(s.n_expert);
    let w = s.n_expert * c;
    let row_h = c + 1;
    let h = (rows.len() * row_h).max(1);
    let mut px = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (e, &v) in row.iter().enumerate() {
            let rgb = colour(scaled(v, max));
            for y in r * row_h..r * row_h + c {
                for x in e * c..(e + 1) * c {
                    px[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    (w as u32, h as u32, px)
}

/// The map as a PNG file's bytes.
pub fn png_bytes(s: &RoutingStats) -> Result<Vec<u8>> {
    let (w, h, px) = raster(s);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().context("cannot encode the PNG")?;
        writer
            .write_image_data(&px)
            .context("cannot encode the PNG")?;
        writer.finish().context("cannot encode the PNG")?;
    }
    Ok(out)
}

/// Shades for the terminal view, from unused to the busiest cell.
pub const SHADES: [char; 5] = ['·', '░', '▒', '▓', '█'];

/// The shade of a cell: `·` only for an expert never used, then quarters of the map's maximum.
pub fn shade(v: f64, max: f64) -> char {
    if v <= 0.0 || max <= 0.0 {
        return SHADES[0];
    }
    let q = ((v / max) * 4.0).ceil() as usize;
    SHADES[q.clamp(1, 4)]
}

/// The map as text, one line per layer, one character per expert.
pub fn terminal(s: &RoutingStats) -> String {
    let (rows, max) = grid(s);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "utilisation per layer (one column per expert; · unused, ░▒▓█ quarters of the busiest cell = {:.1}% of tokens)",
        100.0 * max
    );
    for (row, l) in rows.iter().zip(&s.layers) {
        let line: String = row.iter().map(|&v| shade(v, max)).collect();
        let _ = writeln!(
            o,
            "L{:<3} │{line}│ H={:.2} max/mean={:.2}",
            l.layer, l.entropy_norm, l.imbalance
        );
    }
    o
}
