//! The documentation's links resolve: every relative link `[text](path)` and `[text](path#anchor)`
//! in README.md, CHANGELOG.md and docs/*.md names an existing file, and every `#anchor` names a
//! heading of its target file under GitHub's rule for heading ids. Links to http(s) and mailto
//! addresses are not followed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Markdown files whose links are checked: README.md, CHANGELOG.md and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// GitHub's id of a heading: lowercase, punctuation dropped except `-` and `_`, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether a line opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

/// The ids of a Markdown text's headings (outside code blocks), with GitHub's `-1`, `-2`, ...
/// suffixes for repeated headings.
fn anchors(text: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if is_fence(line) {
            fenced = !fenced;
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if fenced || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut id = base.clone();
        let mut n = 0;
        while !ids.insert(id.clone()) {
            n += 1;
            id = format!("{base}-{n}");
        }
    }
    ids
}

/// The line with its inline code spans blanked, so that `[a](b)` inside backticks is not a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// Every link target of a Markdown text outside code, with its 1-based line: inline links
/// `[text](target "title")` and reference definitions `[label]: target`.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, raw) in text.lines().enumerate() {
        if is_fence(raw) {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = without_code_spans(raw);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find("]: ") {
                if !trimmed[..end].contains(']') {
                    let target = trimmed[end + 3..].split_whitespace().next().unwrap_or("");
                    out.push((i + 1, target.to_string()));
                    continue;
                }
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            // The target ends at the `)` that balances the opening one.
            let mut depth = 0usize;
            let mut end = after.len();
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = j;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push((i + 1, target.to_string()));
            rest = &after[end.min(after.len())..];
        }
    }
    out
}

/// What is wrong with each relative link of `file` (whose text is `text`), one message a link.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().unwrap();
    let name = file.strip_prefix(repo()).unwrap_or(file).display().to_string();
    let mut problems = Vec::new();
    for (line, target) in links(text) {
        let at = format!("{name}:{line}: link `{target}`");
        if target.is_empty() {
            problems.push(format!("{at}: empty target"));
            continue;
        }
        if ["http://", "https://", "mailto:"].iter().any(|p| target.starts_with(p)) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() { file.to_path_buf() } else { dir.join(path) };
        if !path.is_empty() && !resolved.exists() {
            problems.push(format!("{at}: {} does not exist", resolved.display()));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if resolved.extension().is_none_or(|x| x != "md") {
            problems.push(format!("{at}: an anchor into a file that is not Markdown"));
            continue;
        }
        let target_text =
            if path.is_empty() { text.to_string() } else { std::fs::read_to_string(&resolved).unwrap_or_default() };
        let ids = anchors(&target_text);
        if !ids.contains(anchor) {
            let mut known: Vec<_> = ids.into_iter().collect();
            known.sort();
            problems.push(format!("{at}: no heading with the id `{anchor}` (its headings: {})", known.join(", ")));
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        checked += links(&text).len();
        problems.extend(broken_links(&file, &text));
    }
    assert!(checked > 50, "only {checked} links found: is the link parser broken?");
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn heading_ids_follow_githubs_rule() {
    assert_eq!(slug("GPU: one NVIDIA H200"), "gpu-one-nvidia-h200");
    assert_eq!(slug("Decoding from the GGUF weights: `--dtype gguf`"), "decoding-from-the-gguf-weights---dtype-gguf");
    assert_eq!(slug("One loop, more knobs: the other papers' loops"), "one-loop-more-knobs-the-other-papers-loops");
    assert_eq!(slug("[sft]"), "sft");
    assert_eq!(slug("MKL's products"), "mkls-products");
    assert_eq!(slug("snake_case (kept)"), "snake_case-kept");
    let ids = anchors("# A\n## A\n```\n# not a heading\n```\n#no-space\n### Fine-tuning (CPU)\n");
    let mut ids: Vec<_> = ids.into_iter().collect();
    ids.sort();
    assert_eq!(ids, ["a", "a-1", "fine-tuning-cpu"]);
}

#[test]
fn a_broken_link_or_anchor_is_reported_with_file_and_line() {
    let file = repo().join("docs/example.md");
    let text = "# Title\n\nSee [ok](#title), [web](https://example.com) and `[not](a link)`.\n\
                [gone](missing.md) and [bad anchor](protocol.md#no-such-section) and [self](#nope)\n\
                ```\n[in code](missing-too.md)\n```\n[ref]: ../README.md#quick-start\n";
    let problems = broken_links(&file, text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("docs/example.md:4: link `missing.md`") && problems[0].contains("does not exist"));
    assert!(problems[1].contains("`protocol.md#no-such-section`") && problems[1].contains("no heading"));
    assert!(problems[2].contains("`#nope`"));
}
