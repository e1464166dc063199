//! The `--era` option of `test`, `qemu`, `bench` and `eras`: a checked name for the kernel's
//! `era=YEAR` command-line token (SEMANTICS.md section 9). The token stays the mechanism; this
//! only refuses a year the kernel does not know before minutes of building and booting.

/// cowlab's eras, oldest first, as `era=` takes them; the last is the kernel's default.
pub const ERAS: [u32; 5] = [2009, 2016, 2020, 2022, 2023];

/// The kernel's default era (what a boot without `era=` runs).
pub const DEFAULT_ERA: u32 = 2023;

/// clap's parser for `--era YEAR`: one of [`ERAS`], or an error listing them.
pub fn parse(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|year| ERAS.contains(year))
        .ok_or_else(|| {
            let valid: Vec<String> = ERAS.iter().map(u32::to_string).collect();
            format!("unknown era {value:?}: valid eras are {}", valid.join(", "))
        })
}

/// `tokens` with `era=YEAR` in front when an era was chosen.
pub fn with_token(era: Option<u32>, tokens: &str) -> String {
    match era {
        Some(year) if tokens.trim().is_empty() => format!("era={year}"),
        Some(year) => format!("era={year} {}", tokens.trim()),
        None => tokens.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_eras_parse_and_unknown_ones_list_the_valid() {
        for year in ERAS {
            assert_eq!(parse(&year.to_string()), Ok(year));
        }
        let error = parse("1999").unwrap_err();
        assert!(error.contains("2009, 2016, 2020, 2022, 2023"), "{error}");
        assert!(parse("twenty").is_err());
        assert_eq!(with_token(Some(2016), " -- t_cow"), "era=2016 -- t_cow");
        assert_eq!(with_token(None, "ktest"), "ktest");
        assert_eq!(with_token(Some(2009), ""), "era=2009");
    }
}
