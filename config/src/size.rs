//! [`ByteSize`]: a byte count written as `50GB`, `512MiB` or `1024`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes. Parses a non-negative integer with an optional, case-insensitive unit:
/// `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
/// No unit means bytes. In TOML either a string (`"50GB"`) or an integer (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// What a size must look like; used in every size error message.
pub(crate) const SIZE_FORM: &str = "expected a size like 50GB, 512MiB or 1024 (bytes)";

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{SIZE_FORM}, got {s:?}");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let unit = unit.trim_start().to_ascii_lowercase();
        let mult = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?.1;
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is larger than 2^64 bytes"))
    }
}

impl fmt::Display for ByteSize {
    /// With the exact unit that gives the smallest number, so `50GB` prints as `50GB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let best = UNITS
            .iter()
            .filter(|(u, m)| !u.is_empty() && self.0.is_multiple_of(*m))
            .min_by_key(|(_, m)| self.0 / m);
        match best {
            Some((unit, mult)) if self.0 != 0 => {
                let name = match *unit {
                    "b" => "B".to_string(),
                    u if u.ends_with("ib") => format!("{}iB", u[..1].to_ascii_uppercase()),
                    u => u.to_ascii_uppercase(),
                };
                write!(f, "{}{}", self.0 / mult, name)
            }
            _ => write!(f, "{}B", self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"50GB\", \"512MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{SIZE_FORM}, got {n}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn parses_units() {
        let cases = [
            ("1024", 1024),
            ("0", 0),
            ("7B", 7),
            ("50GB", 50_000_000_000),
            ("50gb", 50_000_000_000),
            ("2 kb", 2_000),
            ("512MiB", 512 << 20),
            ("1tib", 1 << 40),
            ("3TB", 3_000_000_000_000),
            (" 4KiB ", 4096),
        ];
        for (s, n) in cases {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "GB",
            "10 XB",
            "1.5GB",
            "-1",
            "10GBs",
            "99999999999999999999",
            "20000000TiB",
        ] {
            let err = s.parse::<ByteSize>().unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(ByteSize(50_000_000_000).to_string(), "50GB");
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        for n in [1u64, 1000, 1024, 5 << 40, 12_345_000] {
            assert_eq!(ByteSize(n).to_string().parse::<ByteSize>(), Ok(ByteSize(n)));
        }
    }
}
