//! Rule sets ("eras", SEMANTICS.md section 9).
//!
//! The kernel can run under the COW/pinning rules Linux had in 2009, 2016, 2020, 2022 or 2023, so
//! that the historical bugs can be reproduced and the fixes compared. The era is a single atomic
//! in [`crate::Mm`]; every decision that differs between eras is one function in
//! [`crate::rules`] that takes the era as its first argument. Nothing else looks at the era.

#![deny(unsafe_code)]

/// A rule set, named after the year Linux adopted it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum Era {
    /// COW reuse on `mapcount == 1`; pins are plain references; Dirty COW is open.
    Y2009 = 0,
    /// As 2009, with the Dirty COW fix (`FOLL_COW`, Linux 4.8.3).
    Y2016 = 1,
    /// COW reuse on `refcount == 1` (Linux 5.8/5.9); `FOLL_PIN` tracked; fork copies pinned pages.
    Y2020 = 2,
    /// The anon-exclusive bit decides first (Linux 5.19/6.2); R/O pins unshare.
    Y2022 = 3,
    /// As 2022, plus DMA through `FOLL_PIN` and no long-term writable pins of dirty-tracked file
    /// pages (Linux 6.5).
    #[default]
    Y2023 = 4,
}

impl Era {
    pub const ALL: [Era; 5] = [Era::Y2009, Era::Y2016, Era::Y2020, Era::Y2022, Era::Y2023];

    /// The year as on the command line (`era=2009`).
    pub const fn year(self) -> u32 {
        match self {
            Era::Y2009 => 2009,
            Era::Y2016 => 2016,
            Era::Y2020 => 2020,
            Era::Y2022 => 2022,
            Era::Y2023 => 2023,
        }
    }

    pub const fn from_year(year: u32) -> Option<Era> {
        match year {
            2009 => Some(Era::Y2009),
            2016 => Some(Era::Y2016),
            2020 => Some(Era::Y2020),
            2022 => Some(Era::Y2022),
            2023 => Some(Era::Y2023),
            _ => None,
        }
    }

    /// Parses a command-line value such as `"2016"`.
    pub fn parse(s: &str) -> Option<Era> {
        s.parse().ok().and_then(Era::from_year)
    }

    pub(crate) const fn from_u8(v: u8) -> Era {
        match v {
            0 => Era::Y2009,
            1 => Era::Y2016,
            2 => Era::Y2020,
            3 => Era::Y2022,
            _ => Era::Y2023,
        }
    }
}

impl core::fmt::Display for Era {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.year())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for era in Era::ALL {
            assert_eq!(Era::from_year(era.year()), Some(era));
            assert_eq!(Era::from_u8(era as u8), era);
            assert_eq!(Era::parse(&std::format!("{era}")), Some(era));
        }
        assert_eq!(Era::parse("1999"), None);
        assert_eq!(Era::default(), Era::Y2023);
    }
}
