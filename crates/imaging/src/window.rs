//! VOI windows: the named CT presets and `C,W` overrides, and DICOM's linear window function
//! (PS3.3 C.11.2.1.2.1). Shared by DICOM objects and CT volumes (NIfTI, NRRD in HU).

/// A CT window: named presets or explicit centre/width in HU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPreset {
    /// Window centre (HU).
    pub center: f64,
    /// Window width (HU), at least 1.
    pub width: f64,
}

impl std::str::FromStr for WindowPreset {
    type Err = String;
    /// `lung`, `mediastinum`, `abdomen`, `bone`, `brain`, or `C,W`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (center, width) = match s.to_ascii_lowercase().as_str() {
            "lung" => (-600.0, 1500.0),
            "mediastinum" => (50.0, 350.0),
            "abdomen" => (40.0, 400.0),
            "bone" => (400.0, 1800.0),
            "brain" => (40.0, 80.0),
            other => {
                let (c, w) = other
                    .split_once(',')
                    .ok_or_else(|| format!("unknown window {s:?}: use a preset or C,W"))?;
                let c = c
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window centre {c:?}"))?;
                let w: f64 = w
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window width {w:?}"))?;
                if w < 1.0 {
                    return Err(format!("window width must be >= 1, got {w}"));
                }
                (c, w)
            }
        };
        Ok(WindowPreset { center, width })
    }
}

/// DICOM PS3.3 C.11.2.1.2.1 linear window, to `[0, 1]`.
pub fn window_linear(x: f32, center: f64, width: f64) -> f32 {
    let (c, w) = (center - 0.5, (width - 1.0).max(1.0));
    let x = x as f64;
    if x <= c - w / 2.0 {
        0.0
    } else if x > c + w / 2.0 {
        1.0
    } else {
        (((x - c) / w) + 0.5) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_dicom_linear_function() {
        // C=40, W=400: [-160.5 .. 239.5] maps onto [0, 1].
        assert_eq!(window_linear(-1000.0, 40.0, 400.0), 0.0);
        assert_eq!(window_linear(1000.0, 40.0, 400.0), 1.0);
        assert!((window_linear(39.5, 40.0, 400.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn presets_and_explicit_windows_parse() {
        let lung: WindowPreset = "Lung".parse().unwrap();
        assert_eq!((lung.center, lung.width), (-600.0, 1500.0));
        let c: WindowPreset = "40, 400".parse().unwrap();
        assert_eq!((c.center, c.width), (40.0, 400.0));
        assert!("liver".parse::<WindowPreset>().is_err());
        assert!("40,0".parse::<WindowPreset>().is_err());
    }
}
