//! Reading numbers and PASID lists typed by a user: one parser for every command-line value
//! and every `--hold` session word, so hex, `_` separators and ranges mean the same
//! everywhere.
//!
//! A number is decimal (`4096`) or hex with `0x` (`0x1000`), `_` allowed between digits. A
//! PASID list is `all`, or numbers and inclusive ranges joined by commas (`1-3,7`), the form
//! `vsva sets` and the session's `list` print.

/// Parses a `u64` (decimal, or hex with `0x`).
///
/// # Errors
///
/// A message naming the input: negative numbers, other characters and overflow each say so.
pub(crate) fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{t}: negative numbers are not accepted (addresses, PASIDs, counts and quotas are unsigned)"
        ));
    }
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => t.replace('_', "").parse::<u64>(),
    };
    r.map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => format!("{t}: too large"),
        std::num::IntErrorKind::Empty => "a number is missing".into(),
        _ => format!("{t}: not a number (decimal, or hex with 0x)"),
    })
}

/// Parses a `u32` (decimal, or hex with `0x`).
///
/// # Errors
///
/// As [`parse_u64`], and a value above `u32::MAX` is too large.
pub(crate) fn parse_u32(s: &str) -> Result<u32, String> {
    let v = parse_u64(s)?;
    u32::try_from(v).map_err(|_| format!("{}: too large (at most {:#x})", s.trim(), u32::MAX))
}

/// Parses a count of things to do (a `u32` as [`parse_u32`] reads it), at least 1.
///
/// # Errors
///
/// As [`parse_u32`], and 0 is refused (asking for nothing is a mistyped command, not a
/// success).
pub(crate) fn parse_count(s: &str) -> Result<u32, String> {
    match parse_u32(s)? {
        0 => Err(format!("{}: must be at least 1", s.trim())),
        n => Ok(n),
    }
}

/// Which PASIDs a user named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PasidList {
    /// `all`: every PASID the process owns.
    All,
    /// Inclusive ranges, in the order given.
    Ranges(Vec<(u32, u32)>),
}

impl PasidList {
    /// Whether `pasid` is named.
    pub(crate) fn contains(&self, pasid: u32) -> bool {
        match self {
            PasidList::All => true,
            PasidList::Ranges(r) => r.iter().any(|&(lo, hi)| (lo..=hi).contains(&pasid)),
        }
    }
}

/// Parses `all`, or `N`, `N-M` items joined by commas (and by spaces when several words are
/// given).
///
/// # Errors
///
/// A message naming the item that is not a number or a range, or a range whose end is below
/// its start.
pub(crate) fn parse_pasid_list<S: AsRef<str>>(words: &[S]) -> Result<PasidList, String> {
    let items: Vec<&str> = words
        .iter()
        .flat_map(|w| w.as_ref().split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if items.is_empty() {
        return Err("no PASID given (a PASID, a range like 1-3, or all)".into());
    }
    if items.iter().any(|i| i.eq_ignore_ascii_case("all")) {
        if items.len() > 1 {
            return Err("`all` stands alone".into());
        }
        return Ok(PasidList::All);
    }
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        // A leading '-' is a sign, not a range (reported as negative by parse_u32).
        let (lo, hi) = match item.get(1..).and_then(|rest| rest.find('-')) {
            Some(i) => (&item[..=i], &item[i + 2..]),
            None => (item, item),
        };
        let (lo, hi) = (parse_u32(lo)?, parse_u32(hi)?);
        if hi < lo {
            return Err(format!("{item}: the range ends below its start"));
        }
        ranges.push((lo, hi));
    }
    Ok(PasidList::Ranges(ranges))
}

/// Compresses an ascending list into ranges: `1-4,7,9-10`, or `-` for none.
pub(crate) fn ranges(pasids: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pasids.len() {
        let start = pasids[i];
        let mut end = start;
        while i + 1 < pasids.len() && pasids[i + 1] == end + 1 {
            i += 1;
            end = pasids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_hex_decimal_and_refuse_the_rest() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("0x1000", Ok(0x1000)),
            ("0X10", Ok(16)),
            (" 4096 ", Ok(4096)),
            ("1_000", Ok(1000)),
            ("0xffff_8000_0000_0000", Ok(0xffff_8000_0000_0000)),
            ("-1", Err("negative")),
            ("0xzz", Err("0xzz: not a number")),
            ("", Err("missing")),
            ("99999999999999999999", Err("too large")),
        ];
        for (input, want) in cases {
            match (parse_u64(input), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{input:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input:?}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(parse_u32("0xffffffff"), Ok(u32::MAX));
        assert!(parse_u32("0x100000000").unwrap_err().contains("too large"));
        assert_eq!(parse_count("3"), Ok(3));
        assert_eq!(parse_count(" 0 "), Err("0: must be at least 1".into()));
        assert!(parse_count("0x0").unwrap_err().contains("at least 1"));
    }

    #[test]
    fn pasid_lists_read_what_ranges_prints() {
        assert_eq!(parse_pasid_list(&["all"]), Ok(PasidList::All));
        assert_eq!(
            parse_pasid_list(&["1-3,5", "0x10"]),
            Ok(PasidList::Ranges(vec![(1, 3), (5, 5), (16, 16)]))
        );
        let printed = ranges(&[1, 2, 3, 5, 7, 8]);
        assert_eq!(printed, "1-3,5,7-8");
        let back = parse_pasid_list(&[printed]).unwrap();
        assert!([1, 2, 3, 5, 7, 8].iter().all(|&p| back.contains(p)));
        assert!(!back.contains(4) && !back.contains(6));
        for bad in ["3-1", "-2", "1-x", "all,3", ""] {
            assert!(parse_pasid_list(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[9]), "9");
    }
}
