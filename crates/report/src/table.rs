//! Text tables as a researcher reads them: numbers with four significant digits, aligned plain
//! text, Markdown and CSV.

use std::fmt::Write;

/// `x` with four significant digits in fixed point (0.3835, 12.70, 4512); scientific notation
/// only below 1e-3 or from 1e5 up (2.793e-6, 1.000e5), as the protocol's tables print them.
pub fn number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    match decimals(x) {
        Some(d) => format!("{x:.d$}"),
        None => format!("{x:.3e}"),
    }
}

/// The decimals that print `x` in fixed point with four significant digits, or `None` where it
/// goes in scientific notation.
fn decimals(x: f64) -> Option<usize> {
    if x == 0.0 {
        return Some(0);
    }
    // The exponent after rounding to four digits, exact where log10 is not (1e-3, 9.99996 → 1e1).
    let sci = format!("{:.3e}", x.abs());
    let e: i32 = sci.split_once('e').and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    (-3..5).contains(&e).then(|| (3 - e).max(0) as usize)
}

/// `mean ± sd`, the standard deviation printed to the mean's decimals (0.3835 ± 0.0123) unless
/// that would print it as zero; the mean alone when `sd` is `None` (a single seed).
pub fn mean_sd(mean: f64, sd: Option<f64>) -> String {
    let m = number(mean);
    let Some(sd) = sd.filter(|s| s.is_finite()) else { return m };
    let s = match (mean.is_finite().then(|| decimals(mean)).flatten(), decimals(sd)) {
        // A zero spread prints as the mean does (5.817 ± 0.000), not as a bare 0.
        (Some(d), Some(_)) if sd == 0.0 || sd >= 0.5 * 10f64.powi(-(d as i32)) => format!("{sd:.d$}"),
        _ => number(sd),
    };
    format!("{m} ± {s}")
}

/// A titled table of text cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Whether column `c` holds numbers (`-` for none, `a ± b` counts): right-aligned.
    fn numeric(&self, c: usize) -> bool {
        let is_num = |s: &str| {
            let head = s.split(" ± ").next().unwrap_or(s);
            s == "-" || head.parse::<f64>().is_ok()
        };
        self.rows.iter().all(|r| r.get(c).is_none_or(|s| is_num(s)))
    }

    /// The title, then the columns aligned (numbers right, text left) and indented by two spaces.
    pub fn plain(&self) -> String {
        let cols = self.header.len();
        let width = |c: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let right: Vec<bool> = (0..cols).map(|c| self.numeric(c)).collect();
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "{}", self.title);
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = (0..cols)
                .map(|c| {
                    let (s, w) = (row.get(c).map_or("", String::as_str), widths[c]);
                    if right[c] {
                        format!("{s:>w$}")
                    } else {
                        format!("{s:<w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
        out
    }

    /// The title in bold, then a GitHub-flavoured Markdown table (numbers right-aligned).
    pub fn markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let line = |r: &[String]| format!("| {} |", r.iter().map(|s| cell(s)).collect::<Vec<_>>().join(" | "));
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "**{}**\n", self.title);
        }
        let _ = writeln!(out, "{}", line(&self.header));
        let rule: Vec<&str> = (0..self.header.len()).map(|c| if self.numeric(c) { "---:" } else { "---" }).collect();
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }

    /// The header and rows as CSV (RFC 4180 quoting); the title is left out.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let _ = writeln!(out, "{}", r.iter().map(|s| csv_field(s)).collect::<Vec<_>>().join(","));
        }
        out
    }
}

/// One CSV field, quoted where it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_significant_digits_fixed_point_in_range() {
        let cases = [
            (0.38354, "0.3835"),
            (12.7, "12.70"),
            (0.09966, "0.09966"),
            (0.001, "0.001000"),
            (0.000999, "9.990e-4"),
            (2.793e-6, "2.793e-6"),
            (4512.3, "4512"),
            (9999.4, "9999"),
            (99999.4, "1.000e5"),
            (54321.0, "54321"),
            (123456.0, "1.235e5"),
            (9.99996, "10.00"),
            (-0.5, "-0.5000"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ];
        for (x, want) in cases {
            assert_eq!(number(x), want, "{x}");
        }
    }

    #[test]
    fn sd_to_the_means_decimals() {
        assert_eq!(mean_sd(0.38354, Some(0.01234)), "0.3835 ± 0.0123");
        assert_eq!(mean_sd(12.7, Some(3.0)), "12.70 ± 3.00");
        assert_eq!(mean_sd(0.38354, None), "0.3835");
        assert_eq!(mean_sd(5.817, Some(0.0)), "5.817 ± 0.000");
        // Too small for the mean's decimals: its own four digits.
        assert_eq!(mean_sd(12.7, Some(0.0001234)), "12.70 ± 1.234e-4");
        assert_eq!(mean_sd(1e6, Some(2e5)), "1.000e6 ± 2.000e5");
    }

    #[test]
    fn plain_markdown_csv() {
        let t = Table {
            title: "kl".into(),
            header: vec!["workflow".into(), "t=1".into()],
            rows: vec![vec!["replace".into(), "0.1 ± 0.02".into()], vec!["a,b".into(), "-".into()]],
        };
        assert_eq!(t.plain(), "kl\n  workflow         t=1\n  replace   0.1 ± 0.02\n  a,b                -\n");
        assert_eq!(t.markdown(), "**kl**\n\n| workflow | t=1 |\n|---|---:|\n| replace | 0.1 ± 0.02 |\n| a,b | - |\n");
        assert_eq!(t.csv(), "workflow,t=1\nreplace,0.1 ± 0.02\n\"a,b\",-\n");
    }
}
