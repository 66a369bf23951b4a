//! The documentation's command lines parse: every line in a fenced code block of README.md and
//! docs/*.md that runs thrive (`thrive ...`, `target/release/thrive ...`,
//! `./target/release/thrive ...`, or `cargo run ... -p thrive-cli ... -- ARGS`) is split as a
//! shell splits it and handed to the binary's own argument parser, so a renamed or removed flag
//! cannot stay in the docs. Comments (`# ...`), `\` continuations and environment assignments
//! (`RUST_LOG=debug thrive ...`) are dropped, and a line ends at a shell operator (`|`, `>`, `<`,
//! `&&`, `;`).

use crate::Cli;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// One command line of a document: where it starts and its words.
#[derive(Debug, PartialEq)]
struct CommandLine {
    line: usize,
    words: Vec<String>,
}

/// Splits a shell line into words: single and double quotes, backslash escapes, a `#` that starts a
/// word begins a comment, and an unquoted `|`, `&`, `;`, `<` or `>` ends the command.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '|' | '&' | ';' | '<' | '>' => break,
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Whether a word is an environment assignment (`NAME=value`).
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// thrive's arguments (after the program name) if the words run thrive, else `None`.
fn thrive_args(words: &[String]) -> Option<Vec<String>> {
    let words: Vec<&str> = words.iter().map(String::as_str).skip_while(|w| is_assignment(w)).collect();
    match *words.first()? {
        "thrive" | "target/release/thrive" | "./target/release/thrive" => {
            Some(words[1..].iter().map(|w| w.to_string()).collect())
        }
        "cargo" if words.get(1) == Some(&"run") => {
            let sep = words.iter().position(|w| *w == "--");
            let cargo_args = &words[..sep.unwrap_or(words.len())];
            let runs_cli = cargo_args.windows(2).any(|w| matches!(w[0], "-p" | "--package") && w[1] == "thrive-cli")
                || cargo_args.contains(&"--package=thrive-cli");
            runs_cli.then(|| sep.map_or(Vec::new(), |s| words[s + 1..].iter().map(|w| w.to_string()).collect()))
        }
        _ => None,
    }
}

/// The command lines in a Markdown text's fenced code blocks, `\` continuations joined, each with
/// the line it starts on (1-based).
fn command_lines(text: &str) -> Vec<CommandLine> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            pending = None;
            continue;
        }
        if !fenced {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                out.push(CommandLine { line: start, words: shell_words(&joined) });
            }
        }
    }
    out
}

/// Parses every thrive command line of `text` with [`Cli`]: the number of lines checked, and one
/// message per line that does not parse (`name:line: command: clap's error`).
fn check(name: &str, text: &str) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for cmd in command_lines(text) {
        let Some(args) = thrive_args(&cmd.words) else { continue };
        checked += 1;
        let argv = std::iter::once("thrive".to_string()).chain(args.iter().cloned());
        if let Err(e) = Cli::command().try_get_matches_from(argv) {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            failures.push(format!("{name}:{}: thrive {}: {first}", cmd.line, args.join(" ")));
        }
    }
    (checked, failures)
}

/// README.md and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    std::iter::once(root.join("README.md")).chain(docs).collect()
}

#[test]
fn every_documented_thrive_command_parses() {
    let mut failures = Vec::new();
    let mut per_file = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy();
        let name = if name == "README.md" { name.into_owned() } else { format!("docs/{name}") };
        let (checked, failed) = check(&name, &text);
        per_file.push((name, checked));
        failures.extend(failed);
    }
    let readme = per_file.iter().find(|(n, _)| n == "README.md").map_or(0, |(_, n)| *n);
    assert!(readme >= 20, "only {readme} thrive command lines found in README.md: is the extraction broken?");
    assert!(failures.is_empty(), "command lines that thrive refuses:\n{}", failures.join("\n"));
}

#[test]
fn the_parser_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn a_wrong_flag_is_reported_with_its_line() {
    let text = "text\n```sh\nthrive gaussian --dim 3   # fine\n\
                RUST_LOG=debug thrive gaussian --dimm 3 > out.txt\n\
                cargo run --release -p thrive-cli -- kde \\\n    --no-such-flag\n\
                cargo test --workspace --no-such-flag\n```\n";
    let (checked, failures) = check("doc.md", text);
    assert_eq!(checked, 3);
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(failures[0].starts_with("doc.md:4: thrive gaussian --dimm 3:"), "{}", failures[0]);
    assert!(failures[1].starts_with("doc.md:5: thrive kde --no-such-flag:"), "{}", failures[1]);
}

#[test]
fn lines_split_as_a_shell_splits_them() {
    let words = |s: &str| shell_words(s);
    assert_eq!(
        words(r#"thrive demo --set 'value.num_real=[0, 50]' # a comment's quote"#),
        ["thrive", "demo", "--set", "value.num_real=[0, 50]"]
    );
    assert_eq!(
        words(r#"thrive generate --prompt "say \"hi\"" | head"#),
        ["thrive", "generate", "--prompt", r#"say "hi""#]
    );
    assert_eq!(words("a b#c && d"), ["a", "b#c"]);
    assert_eq!(
        thrive_args(&words("A=1 B_2=x ./target/release/thrive run r.toml")),
        Some(vec!["run".to_string(), "r.toml".to_string()])
    );
    assert_eq!(thrive_args(&words("cargo run --release -p thrive-mkl --example gflops")), None);
    assert_eq!(thrive_args(&words("bash scripts/setup-mkl.sh")), None);
}
