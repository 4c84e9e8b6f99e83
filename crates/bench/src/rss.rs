//! Resident memory of a process from `/proc/PID/status` (Linux): current (`VmRSS`) and peak
//! (`VmHWM`), and resetting the peak (`/proc/PID/clear_refs`, "5"), so that a harness can
//! attribute a peak to one request.

/// `VmRSS` and `VmHWM` of `pid` (`None`: self) in bytes; `None` where /proc is unavailable.
pub fn of(pid: Option<u32>) -> Option<(u64, u64)> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Reset `pid`'s peak RSS to its current RSS; false where the kernel refuses.
pub fn reset_peak(pid: Option<u32>) -> bool {
    let path = match pid {
        Some(p) => format!("/proc/{p}/clear_refs"),
        None => "/proc/self/clear_refs".to_string(),
    };
    std::fs::write(path, "5").is_ok()
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_and_resets_own_peak() {
        let Some((rss, hwm)) = super::of(None) else {
            panic!("no /proc/self/status on this Linux machine")
        };
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
        // Touch 64 MiB, drop it: the peak stays above the current RSS until reset.
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        drop(v);
        let (rss2, hwm2) = super::of(None).unwrap();
        assert!(hwm2 >= rss2 + (32 << 20), "rss {rss2} hwm {hwm2}");
        assert!(super::reset_peak(None));
        let (rss3, hwm3) = super::of(None).unwrap();
        assert!(
            hwm3 < hwm2 && hwm3 <= rss3 + (8 << 20),
            "after reset rss {rss3} hwm {hwm3}"
        );
    }
}
