//! Resource quantities (`500m`, `1Gi`, `1e3`), parsed just far enough to compare them:
//! requests against limits, PVC size increases, negativity.

use std::cmp::Ordering;

/// The message upstream's decoder gives for a malformed quantity.
pub const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A quantity as an exact count of nano-units, rounded up like upstream's `RoundUp(Nano)`;
/// values too large for that saturate, which keeps comparisons sound for any real cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return None;
        }
        // value = digits * 10^exp10 * 2^exp2, in units
        let digits = format!("{int_part}{frac_part}");
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            _ => {
                let e = suffix.strip_prefix(['e', 'E'])?;
                let e: i32 = e.parse().ok()?;
                exp10 = exp10.checked_add(e)?;
            }
        }
        let mut value: i128 = 0;
        for c in digits.bytes() {
            value = value
                .saturating_mul(10)
                .saturating_add(i128::from(c - b'0'));
        }
        // scale to nano units (saturating: `1e2147483647` is huge, not an overflow)
        exp10 = exp10.saturating_add(9);
        if exp10 >= 0 {
            value = value.saturating_mul(10i128.saturating_pow(exp10 as u32));
        } else {
            let div = 10i128
                .checked_pow(exp10.unsigned_abs())
                .unwrap_or(i128::MAX);
            let rounded_up = value % div != 0;
            value = value / div + i128::from(rounded_up);
        }
        value = value.saturating_mul(1i128 << exp2);
        Some(Quantity(if neg { -value } else { value }))
    }

    pub fn is_negative(&self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// Whether the quantity is a whole number of units.
    pub fn is_integer(&self) -> bool {
        self.0 % NANO == 0
    }

    pub fn nanos(&self) -> i128 {
        self.0
    }
}

/// Compares two quantity strings; `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Quantity::parse(a)?.cmp(&Quantity::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("parse {s}"))
    }

    #[test]
    fn parses_and_compares() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("100m") < q("0.2"));
        assert!(q("-1").is_negative());
        assert!(q("1.5").nanos() == 1_500_000_000);
        assert!(!q("1.5").is_integer());
        assert!(q("2Mi").is_integer());
        assert_eq!(compare("200Mi", "100Mi"), Some(Ordering::Greater));
        assert!(Quantity::parse("abc").is_none());
        assert!(Quantity::parse("1Zi").is_none());
        assert!(Quantity::parse("").is_none());
        assert!(Quantity::parse("1.2.3").is_none());
        assert!(Quantity::parse(".").is_none());
        assert!(Quantity::parse("1e999").is_some());
    }

    #[test]
    fn extreme_exponents_saturate() {
        // Found by review and confirmed by the `quantity` fuzz target: the exponent
        // overflowed (a panic in debug builds, a wrapped scale, and so 0, in release).
        let q = |b: &[u8]| Quantity::parse(std::str::from_utf8(b).expect("utf-8"));
        let huge = q(b"1e2147483647").expect("parses");
        assert!(huge > Quantity::parse("1E").expect("1E") && !huge.is_negative());
        assert_eq!(q(b"1e2147483648"), None);
        assert_eq!(
            q(b"1e-2147483648"),
            Some(Quantity(1)),
            "rounded up to one nano-unit"
        );
        assert_eq!(q(b".5e-2147483648"), None);
    }
}
