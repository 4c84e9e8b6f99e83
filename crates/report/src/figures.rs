//! The report's figures, drawn with plotters from the report JSON only. Each figure is one
//! [`Figure`], drawn twice through the same code: to SVG (inlined in the page) and to an RGB
//! bitmap encoded as PNG (for slides and papers). Text is DejaVu Sans (a Latin subset, in
//! `assets/`, licence beside it), registered with plotters' ab_glyph backend, so the PNGs
//! need no system font and look the same on every machine.

use anyhow::{anyhow, Result};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const FONT: &str = "sans-serif";
static DEJAVU: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// Register the font once per process.
fn font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU).is_ok());
    anyhow::ensure!(ok, "the report's built-in font could not be loaded");
    Ok(())
}

fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// Ten distinct colours (Tableau 10), then evenly spaced hues.
pub fn colour(i: usize) -> RGBColor {
    const T10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if i < T10.len() {
        let (r, g, b) = T10[i];
        return RGBColor(r, g, b);
    }
    let h = ((i - T10.len()) as f64 * 0.618_034) % 1.0;
    let (r, g, b) = hsl(h, 0.65, if i.is_multiple_of(2) { 0.45 } else { 0.62 });
    RGBColor(r, g, b)
}

fn hsl(h: f64, s: f64, l: f64) -> (u8, u8, u8) {
    let q = if l < 0.5 {
        l * (1.0 + s)
    } else {
        l + s - l * s
    };
    let p = 2.0 * l - q;
    let f = |t: f64| {
        let t = t.rem_euclid(1.0);
        let v = if t < 1.0 / 6.0 {
            p + (q - p) * 6.0 * t
        } else if t < 0.5 {
            q
        } else if t < 2.0 / 3.0 {
            p + (q - p) * (2.0 / 3.0 - t) * 6.0
        } else {
            p
        };
        (v * 255.0).round() as u8
    };
    (f(h + 1.0 / 3.0), f(h), f(h - 1.0 / 3.0))
}

/// One figure: its size and how to draw it on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// The figure as SVG text and as PNG bytes.
pub fn render<F: Figure>(f: &F) -> Result<(String, Vec<u8>)> {
    font()?;
    let (w, h) = f.size();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        f.draw(&root)?;
        root.present().map_err(pe)?;
    }
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        f.draw(&root)?;
        root.present().map_err(pe)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| anyhow!("encoding a figure as PNG: {e}"))?;
    Ok((svg, png))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

fn text(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn centred(size: u32) -> TextStyle<'static> {
    text(size).pos(Pos::new(HPos::Center, VPos::Center))
}

/// A legend of `(name, colour, dashed)` in the top-right corner of a chart's plotting area.
fn legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    entries: &[(String, RGBColor, bool)],
) -> Result<()> {
    for (i, (name, c, dashed)) in entries.iter().enumerate() {
        let y = at.1 + 18 * i as i32;
        if *dashed {
            for s in 0..3 {
                let x = at.0 + s * 8;
                root.draw(&PathElement::new(
                    vec![(x, y), (x + 5, y)],
                    c.stroke_width(2),
                ))
                .map_err(pe)?;
            }
        } else {
            root.draw(&PathElement::new(
                vec![(at.0, y), (at.0 + 21, y)],
                c.stroke_width(2),
            ))
            .map_err(pe)?;
        }
        root.draw(&Text::new(
            name.clone(),
            (at.0 + 28, y),
            text(12).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(pe)?;
    }
    Ok(())
}

/// A solid or dashed line through `pts`, in chart coordinates.
fn line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    c: RGBColor,
    dashed: bool,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    if dashed {
        chart
            .draw_series(DashedLineSeries::new(pts.to_vec(), 6, 4, c.stroke_width(2)))
            .map_err(pe)?;
    } else {
        chart
            .draw_series(LineSeries::new(pts.to_vec(), c.stroke_width(2)))
            .map_err(pe)?;
    }
    Ok(())
}

/// P@N for N = 1…100, one panel per label level, micro solid and macro dashed, a line pair
/// per model, the paper's N = 1, 3, 5, 10 marked.
pub struct PnCurve<'a> {
    /// `(model, curve)` where curve is the analysis's `curve` object.
    pub models: Vec<(&'a str, &'a Value)>,
}

impl Figure for PnCurve<'_> {
    fn size(&self) -> (u32, u32) {
        (1500, 470)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let panels = root.split_evenly((1, simcase_eval::LEVELS.len()));
        for (lvl, area) in simcase_eval::LEVELS.iter().zip(&panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("P@N, {lvl}"), text(16))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d((1f64..100f64).log_scale(), 0f64..1.02f64)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("N (log scale)")
                .x_labels(12)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc("modified precision")
                .label_style(text(12))
                .axis_desc_style(text(13))
                .light_line_style(WHITE)
                .draw()
                .map_err(pe)?;
            let mut entries = Vec::new();
            for (m, (name, curve)) in self.models.iter().enumerate() {
                let c = colour(m);
                let ns = f64s(&curve[lvl]["N"]);
                for (key, dash) in [("micro", false), ("macro", true)] {
                    let pts: Vec<(f64, f64)> =
                        ns.iter().copied().zip(f64s(&curve[lvl][key])).collect();
                    line(&mut chart, &pts, c, dash)?;
                    chart
                        .draw_series(
                            pts.iter()
                                .filter(|(n, _)| simcase_eval::NS.contains(&(*n as usize)))
                                .map(|&p| Circle::new(p, 4, c.filled())),
                        )
                        .map_err(pe)?;
                    entries.push((format!("{name} {key}"), c, dash));
                }
            }
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            let off = area.get_base_pixel();
            let at = (
                xr.start - off.0 + 12,
                yr.end - off.1 - 14 - 18 * entries.len() as i32,
            );
            legend(area, at, &entries)?;
        }
        Ok(())
    }
}

/// Grouped bars: one group per category, one bar per model.
pub struct Bars<'a> {
    /// The caption.
    pub title: String,
    /// The y axis's name.
    pub y: &'a str,
    /// The categories along x.
    pub groups: Vec<String>,
    /// `(model, one value per group)`; `None` draws no bar.
    pub series: Vec<(&'a str, Vec<Option<f64>>)>,
}

impl Figure for Bars<'_> {
    fn size(&self) -> (u32, u32) {
        ((220 + 140 * self.groups.len() as u32).max(700), 460)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, text(16))
            .margin(12)
            .margin_right(170)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n, 0f64..1.05f64)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(self.y)
            .label_style(text(12))
            .axis_desc_style(text(13))
            .light_line_style(WHITE)
            .draw()
            .map_err(pe)?;
        let k = self.series.len().max(1) as f64;
        let w = 0.8 / k;
        for (m, (_, vals)) in self.series.iter().enumerate() {
            let c = colour(m);
            for (g, v) in vals.iter().enumerate() {
                let Some(v) = v else { continue };
                let x0 = g as f64 + 0.1 + m as f64 * w;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + w * 0.92, *v)],
                        c.filled(),
                    )))
                    .map_err(pe)?;
                let (px, py) = chart.backend_coord(&(x0 + w * 0.46, *v));
                let off = root.get_base_pixel();
                root.draw(&Text::new(
                    format!("{v:.2}"),
                    (px - off.0, py - off.1 - 8),
                    centred(11),
                ))
                .map_err(pe)?;
            }
        }
        for (g, name) in self.groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            let off = root.get_base_pixel();
            root.draw(&Text::new(
                name.clone(),
                (px - off.0, py - off.1 + 14),
                centred(13),
            ))
            .map_err(pe)?;
        }
        let (x1, y0) = {
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            (xr.end, yr.start)
        };
        let entries: Vec<(String, RGBColor, bool)> = self
            .series
            .iter()
            .enumerate()
            .map(|(m, (name, _))| (name.to_string(), colour(m), false))
            .collect();
        legend(root, (x1 + 12, y0 + 10), &entries)
    }
}

/// kNN accuracy against k at the full label, test solid and val dashed, tuned k marked.
pub struct Knn<'a> {
    /// `(model, knn_curve)`.
    pub models: Vec<(&'a str, &'a Value)>,
    /// The label level drawn.
    pub level: &'a str,
}

impl Figure for Knn<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 460)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let kmax = self
            .models
            .iter()
            .map(|(_, c)| f64s(&c[self.level]["k"]).len())
            .max()
            .unwrap_or(1)
            .max(2) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("kNN vote accuracy against k, {}", self.level),
                text(16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..kmax, 0f64..1.02f64)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("k (neighbours voting)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("accuracy")
            .label_style(text(12))
            .axis_desc_style(text(13))
            .light_line_style(WHITE)
            .draw()
            .map_err(pe)?;
        let mut entries = Vec::new();
        for (m, (name, c)) in self.models.iter().enumerate() {
            let col = colour(m);
            let c = &c[self.level];
            let ks = f64s(&c["k"]);
            for (key, dash) in [("test", false), ("val", true)] {
                let pts: Vec<(f64, f64)> = ks.iter().copied().zip(f64s(&c[key])).collect();
                line(&mut chart, &pts, col, dash)?;
                entries.push((format!("{name} {key}"), col, dash));
            }
            if let Some(k) = c["tuned_k"].as_f64() {
                let acc = f64s(&c["test"]).get(k as usize - 1).copied().unwrap_or(0.0);
                chart
                    .draw_series(std::iter::once(Circle::new((k, acc), 6, col.filled())))
                    .map_err(pe)?;
            }
        }
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        legend(
            root,
            (xr.end - 190, yr.end - 20 - 18 * entries.len() as i32),
            &entries,
        )
    }
}

/// The scaling curve: P@1 and P@10 against examples per class (log), mean over seeds with a
/// min–max band, the flattening point marked.
pub struct Scaling<'a> {
    /// `(model, scaling)`.
    pub models: Vec<(&'a str, &'a Value)>,
}

impl Figure for Scaling<'_> {
    fn size(&self) -> (u32, u32) {
        (1300, 500)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let nmax = self
            .models
            .iter()
            .flat_map(|(_, s)| f64s(&s["n"]))
            .fold(2f64, f64::max);
        for (key, area) in ["P@1", "P@10"].iter().zip(&root.split_evenly((1, 2))) {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{key} against examples per class in the index"),
                    text(16),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d((1f64..nmax * 1.05).log_scale(), 0f64..1.02f64)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("examples per class, n (log scale)")
                .x_labels(12)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc(format!("modified {key}, full label"))
                .label_style(text(12))
                .axis_desc_style(text(13))
                .light_line_style(WHITE)
                .draw()
                .map_err(pe)?;
            let mut entries = Vec::new();
            for (m, (name, s)) in self.models.iter().enumerate() {
                let c = colour(m);
                let ns = f64s(&s["n"]);
                let (mean, lo, hi) = (
                    f64s(&s[key]["mean"]),
                    f64s(&s[key]["min"]),
                    f64s(&s[key]["max"]),
                );
                let mut band: Vec<(f64, f64)> = ns.iter().copied().zip(hi).collect();
                band.extend(ns.iter().copied().zip(lo).rev());
                chart
                    .draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))
                    .map_err(pe)?;
                let pts: Vec<(f64, f64)> = ns.iter().copied().zip(mean).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(pe)?;
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(pe)?;
                if let Some(f) = s["flattens_at"].as_f64() {
                    line(&mut chart, &[(f, 0.0), (f, 1.0)], c, true)?;
                }
                entries.push((format!("{name} (band: min-max over seeds)"), c, false));
            }
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            let off = area.get_base_pixel();
            legend(
                area,
                (
                    xr.start - off.0 + 10,
                    yr.end - off.1 - 14 - 18 * entries.len() as i32,
                ),
                &entries,
            )?;
        }
        Ok(())
    }
}

/// The top-1 confusion as a heat map: rows true labels, columns the label retrieved first,
/// shaded by the row's share, counts written in the cells.
pub struct Confusion<'a> {
    /// Model name for the caption.
    pub model: &'a str,
    /// The analysis's `confusion` object.
    pub data: &'a Value,
}

const CELL: u32 = 24;
/// The most classes a confusion heat map is drawn for (the report notes when it is not).
pub const MAX_CONFUSION: usize = 150;
const NAMES: u32 = 230;

impl Figure for Confusion<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.data["classes"].as_array().map_or(0, Vec::len) as u32;
        (NAMES + 40 + CELL * n.max(1), NAMES + 50 + CELL * n.max(1))
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let classes: Vec<&str> = self.data["classes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let counts: Vec<Vec<u64>> = self.data["counts"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|c| c.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        root.draw(&Text::new(
            format!("Top-1 retrieved label against true label ({})", self.model),
            (10, 16),
            text(16).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(pe)?;
        let (x0, y0) = (NAMES as i32, (NAMES + 30) as i32);
        let cell = CELL as i32;
        for (i, row) in counts.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (j, &c) in row.iter().enumerate() {
                let share = if total > 0 {
                    c as f64 / total as f64
                } else {
                    0.0
                };
                let shade = |lo: f64, hi: f64| (hi - (hi - lo) * share).round() as u8;
                let fill = RGBColor(shade(8.0, 255.0), shade(48.0, 255.0), shade(107.0, 255.0));
                let (x, y) = (x0 + j as i32 * cell, y0 + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    fill.filled(),
                ))
                .map_err(pe)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(220, 220, 220).stroke_width(1),
                ))
                .map_err(pe)?;
                if c > 0 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        c.to_string(),
                        (x + cell / 2, y + cell / 2),
                        centred(10).color(&ink),
                    ))
                    .map_err(pe)?;
                }
                if i == j {
                    root.draw(&Rectangle::new(
                        [(x, y), (x + cell, y + cell)],
                        RGBColor(214, 39, 40).stroke_width(1),
                    ))
                    .map_err(pe)?;
                }
            }
        }
        for (i, name) in classes.iter().enumerate() {
            root.draw(&Text::new(
                name.to_string(),
                (x0 - 6, y0 + i as i32 * cell + cell / 2),
                text(11).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(pe)?;
            root.draw(&Text::new(
                name.to_string(),
                (x0 + i as i32 * cell + cell / 2, y0 - 6),
                text(11)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(pe)?;
        }
        root.draw(&Text::new(
            "true label (rows) / retrieved first (columns)",
            (x0, y0 + cell * classes.len() as i32 + 18),
            text(12).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(pe)?;
        Ok(())
    }
}

/// The embedding map: PCA's first two components, one panel per colouring.
pub struct Map<'a> {
    /// Model name for the caption.
    pub model: &'a str,
    /// `[x, y]` per image.
    pub points: Vec<(f64, f64)>,
    /// The first two components' shares of the variance.
    pub explained: (f64, f64),
    /// `(colouring name, one category per point)`.
    pub colourings: Vec<(&'a str, Vec<String>)>,
}

impl Figure for Map<'_> {
    fn size(&self) -> (u32, u32) {
        (720 * self.colourings.len().max(1) as u32, 640)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in &self.points {
            (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
        }
        let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-6);
        let (px, py) = (pad(xmin, xmax), pad(ymin, ymax));
        let panels = root.split_evenly((1, self.colourings.len().max(1)));
        for ((by, cats), area) in self.colourings.iter().zip(&panels) {
            let mut names: Vec<&String> = cats.iter().collect();
            names.sort();
            names.dedup();
            let (plot, side) = area.split_horizontally(470);
            let mut chart = ChartBuilder::on(&plot)
                .caption(format!("{} embeddings (PCA) by {by}", self.model), text(15))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(50)
                .build_cartesian_2d(xmin - px..xmax + px, ymin - py..ymax + py)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc(format!(
                    "PC1 ({:.1}% of variance)",
                    self.explained.0 * 100.0
                ))
                .y_desc(format!("PC2 ({:.1}%)", self.explained.1 * 100.0))
                .label_style(text(11))
                .axis_desc_style(text(12))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()
                .map_err(pe)?;
            let idx = |c: &String| names.binary_search(&c).unwrap_or(0);
            chart
                .draw_series(
                    self.points
                        .iter()
                        .zip(cats)
                        .map(|(&p, c)| Circle::new(p, 3, colour(idx(c)).mix(0.8).filled())),
                )
                .map_err(pe)?;
            // The legend: as many names as fit, then how many more.
            let fit = 33usize;
            for (i, name) in names.iter().enumerate().take(fit) {
                let y = 40 + 17 * i as i32;
                side.draw(&Circle::new((10, y), 5, colour(i).filled()))
                    .map_err(pe)?;
                side.draw(&Text::new(
                    name.to_string(),
                    (20, y),
                    text(11).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(pe)?;
            }
            if names.len() > fit {
                side.draw(&Text::new(
                    format!("… and {} more", names.len() - fit),
                    (20, 40 + 17 * fit as i32),
                    text(11).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(pe)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_the_same_drawing_in_svg_and_png_with_text_in_both() {
        let ns: Vec<usize> = (1..=100).collect();
        let p: Vec<f64> = ns.iter().map(|n| 1.0 / (*n as f64).sqrt()).collect();
        let level = serde_json::json!({ "N": ns, "micro": p, "macro": p });
        let curve = serde_json::json!({
            "modality": level, "modality/anatomy": level, "modality/anatomy/pathology": level
        });
        let (svg, png) = render(&PnCurve {
            models: vec![("m1", &curve)],
        })
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("P@N, modality/anatomy"));
        assert!(svg.contains("m1 micro") && svg.contains("m1 macro"));
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1500, 470));
        // The caption's row holds dark text pixels (the built-in font rasterised).
        let dark = (0..1500)
            .flat_map(|x| (5..30).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 100, "{dark} dark pixels in the caption row");
        // The first model's colour is drawn.
        let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        assert!(blue > 500, "{blue}");
    }

    #[test]
    fn colours_stay_distinct_past_the_first_ten() {
        let cs: Vec<RGBColor> = (0..40).map(colour).collect();
        for i in 0..cs.len() {
            for j in 0..i {
                assert_ne!(cs[i], cs[j], "{i} and {j}");
            }
        }
    }
}
