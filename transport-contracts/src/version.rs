//! The version of an event type's data: `MAJOR.MINOR`, carried in the
//! CloudEvents `dataversion` extension (`ce-dataversion`).

use std::fmt;

/// `MAJOR.MINOR`: a new minor version only adds optional fields (a reader
/// of any minor of the same major reads it); a new major version is a
/// breaking change, read through an [`Upcast`](crate::Upcast) or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Breaking changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
}

impl Version {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Version { major, minor }
    }

    /// Parse `MAJOR`, `MAJOR.MINOR` or `MAJOR.MINOR.PATCH` (decimal
    /// digits only; a patch, as semantic versions write it, says nothing
    /// about the data and is dropped); anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let number = |s: &str| {
            if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse::<u32>().ok()
            }
        };
        let mut parts = text.split('.');
        let major = number(parts.next()?)?;
        let minor = parts.next().map(number).unwrap_or(Some(0))?;
        match (parts.next().map(number), parts.next()) {
            (None | Some(Some(_)), None) => Some(Version::new(major, minor)),
            _ => None,
        }
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Version::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a MAJOR.MINOR version: {text:?}")))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_dataversion_carries_and_nothing_else() {
        assert_eq!(Version::parse("2"), Some(Version::new(2, 0)));
        assert_eq!(Version::parse("2.13"), Some(Version::new(2, 13)));
        assert_eq!(Version::parse("0.1"), Some(Version::new(0, 1)));
        assert_eq!(Version::parse("1.2.3"), Some(Version::new(1, 2)));
        for bad in [
            "",
            "v2",
            "2.",
            ".1",
            "2.1.",
            "2.1.0.1",
            "-1",
            "+2",
            "2.x",
            " 2",
            "1234567890",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::new(3, 1).to_string(), "3.1");
        assert!(Version::new(2, 0) > Version::new(1, 9));
    }
}
