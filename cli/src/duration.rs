//! The one way every `bypass` option takes a length of time: a number and a unit, e.g.
//! `200ms`, `1s`, `1.5s`, `5us`, `2m`.
//!
//! Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`), `h`. A number without a unit is
//! refused (is `50` milliseconds or seconds?), except `0`.
use std::time::Duration;

/// Parses a duration option (clap's `value_parser` for every duration option).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a duration: write a number and a unit, e.g. 200ms, 1s, 5us, 2m"
        ));
    }
    let bad_num = || format!("{num:?} is not a number");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
        return Err(bad_num());
    }
    let zero = int.bytes().chain(frac.bytes()).all(|b| b == b'0');
    let per: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" if zero => 1,
        "" => {
            return Err(format!(
                "{s:?} has no unit: write e.g. {s}ms or {s}s (units: ns, us, ms, s, m, h)"
            ))
        }
        u => return Err(format!("unknown unit {u:?} (units: ns, us, ms, s, m, h)")),
    };
    // Exact integer arithmetic in nanoseconds (no float rounding: 5us is 5000 ns); digits
    // below a nanosecond are dropped.
    let range = || format!("{s:?} is out of range");
    let whole: u128 = if int.is_empty() {
        0
    } else {
        int.parse::<u128>().map_err(|_| range())?
    };
    let mut ns = whole.checked_mul(per).ok_or_else(range)?;
    let mut place = per;
    for d in frac.bytes().take(30) {
        place /= 10;
        ns += u128::from(d - b'0') * place;
    }
    let secs = u64::try_from(ns / 1_000_000_000).map_err(|_| range())?;
    Ok(Duration::new(secs, (ns % 1_000_000_000) as u32))
}

/// Writes `d` the way [`parse`] reads it, exactly (used to hand durations to child processes
/// and in reports): the largest unit that divides it.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in [("s", 1_000_000_000u128), ("ms", 1_000_000), ("us", 1_000)] {
        if ns >= per && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("5us"), Ok(Duration::from_micros(5)));
        assert_eq!(parse("5µs"), Ok(Duration::from_micros(5)));
        assert_eq!(parse("100ns"), Ok(Duration::from_nanos(100)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "", "50", "1.5", "ms", "-1s", "1x", "1 s s", "1e3s", "1..2s", "9e99h",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(parse("50").unwrap_err().contains("50ms"));
        assert!(parse("3days").unwrap_err().contains("unknown unit"));
        assert!(parse(&format!("{}h", u64::MAX)).is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(25),
            Duration::from_millis(1500),
            Duration::from_secs(600),
            Duration::from_nanos(1_000_000_001),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_millis(200)), "200ms");
        assert_eq!(format(Duration::from_secs(5)), "5s");
    }
}
